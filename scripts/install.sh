#!/usr/bin/env bash
# Sets up a checkout: the venv with the project and its dev tools, and the server jars the
# local stack runs. Safe to rerun, and quick when pyproject.toml, the locks (requirements/)
# and the poms are unchanged: each step records a hash of its input in a stamp file and is
# skipped while it matches. FerretDB, which the suite runs as a MongoDB-protocol server, and
# the Temporal server of the production-shape engine (devstack/engine.py) are built from their
# Go modules once per machine, into a cache outside the checkout.
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

# Same lookup as devstack/home.py.
state_home=${REPLICANTE_HOME:-$PWD/.replicante}
jars_root=${REPLICANTE_JARS:-$state_home/jars}
builds_root=${REPLICANTE_BUILDS:-${XDG_CACHE_HOME:-$HOME/.cache}/replicante/builds}
ferretdb_version=v1.24.2
# devstack/engine.py's VERSION and docker-compose.yml's image tags name the same release.
temporal_version=v1.32.2
# The module needs a newer Go than Debian's or ours: the go command fetches this toolchain.
temporal_toolchain=go1.27.3

digest() { sha256sum "$@" | sha256sum | cut -c1-16; }
fresh() { [[ -f $1 && $(<"$1") == "$2" ]]; }

# Java runs ZooKeeper and Kafka, and Maven fetches their jars; on a bare Debian machine take
# both from Debian's packages (as root, which CI and our machines are).
if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        apt-get update -qq && apt-get install -y -qq default-jre-headless maven >/dev/null
        echo "installed java and maven from Debian's packages"
    else
        echo "install.sh: needs java (17+) and mvn; e.g. apt-get install default-jre-headless maven" >&2
        exit 1
    fi
fi

# tests/test_ui_browser.py drives Debian's Chromium: Playwright's own browser download cannot
# reach its host from our machines. Only a test needs it, so without root this only warns
# (that test then fails, naming this script).
if ! command -v chromium >/dev/null; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        # apt's quiet mode still prints debconf's notes: show its output only on failure.
        if ! out=$(apt-get update -qq 2>&1 &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium 2>&1); then
            echo "$out" >&2
            exit 1
        fi
        echo "installed chromium from Debian's packages"
    else
        echo "install.sh: no chromium for the browser test; e.g. apt-get install chromium" >&2
    fi
fi

# The production-shape engine runs PostgreSQL 15 from Debian's packages (initdb and pg_ctl
# are in `pg_config --bindir`, not on PATH). Only it needs them, so without root this warns.
if [[ ! -x $(pg_config --bindir 2>/dev/null)/initdb ]]; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        if ! out=$(apt-get update -qq 2>&1 &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 2>&1); then
            echo "$out" >&2
            exit 1
        fi
        echo "installed postgresql-15 from Debian's packages"
    else
        echo "install.sh: no PostgreSQL 15 for the production-shape engine; e.g. apt-get install postgresql-15" >&2
    fi
fi

if [[ ! -x .venv/bin/python ]]; then
    python=${PYTHON:-python3}
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || { echo "install.sh: $python is older than 3.11; set PYTHON=python3.11" >&2; exit 1; }
    "$python" -m venv .venv
    echo "created .venv"
fi

# The stamp lives inside what it describes, so deleting .venv or the jars redoes the step.
stamp=.venv/.replicante-installed
hash=$(digest pyproject.toml requirements/*.txt)
if ! fresh "$stamp" "$hash"; then
    # Every dependency (base, dev, playground) at the version and hash the dev lock pins
    # (scripts/lock writes it), then the project alone, editable: pip resolves nothing. (-qq:
    # setuptools warns of every editable install, whatever it holds.)
    .venv/bin/python -m pip install -q --require-hashes --no-deps -r requirements/dev.txt
    .venv/bin/python -m pip install -qq --no-deps -e .
    # A lock that misses a requirement installs all the same under --no-deps: name it here.
    if ! out=$(.venv/bin/python -m pip check); then
        echo "install.sh: requirements/dev.txt is incomplete (run scripts/lock):" >&2
        echo "$out" >&2
        exit 1
    fi
    echo "$hash" >"$stamp"
    echo "installed the project, its dev tools and the playground into .venv"
fi

# tests/test_mongodb_sdam.py reads the drivers' Server Discovery and Monitoring test files
# (mongodb/specifications, CC BY-NC-SA 3.0: never copied into this repo) where the Go
# driver's module vendors them: fetched once per machine into Go's module cache, their
# directory recorded for the test. Only that test needs Go, so without it this only warns.
sdam_module=go.mongodb.org/mongo-driver@v1.17.10
sdam_record=.venv/.replicante-sdam-dir
fetch_sdam_tests() {
    local go out dir
    dir=$(cat "$sdam_record" 2>/dev/null) || true
    [[ $dir == */$sdam_module/testdata/server-discovery-and-monitoring && -d $dir/rs ]] && return
    go=$(command -v go || echo /usr/local/go/bin/go)
    if [[ ! -x $go ]]; then
        echo "install.sh: no Go for tests/test_mongodb_sdam.py's SDAM files (https://go.dev/dl)" >&2
        return
    fi
    if ! out=$("$go" mod download -json "$sdam_module"); then
        echo "install.sh: could not fetch $sdam_module:" >&2
        echo "$out" >&2
        exit 1
    fi
    dir=$(.venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)["Dir"])' <<<"$out")
    dir+=/testdata/server-discovery-and-monitoring
    [[ -d $dir/rs ]] || { echo "install.sh: no SDAM test files in '$dir'" >&2; exit 1; }
    echo "$dir" >"$sdam_record"
    echo "found the SDAM test files of $sdam_module in $dir"
}
fetch_sdam_tests

# Copies the jars one pom pins (with their dependencies) into $jars_root/<server>, where
# devstack.home.jars_dir(<server>) finds them.
install_jars() {
    local server=$1 pom=$2 label=$3
    local jars=$jars_root/$server hash out
    hash=$(digest "$pom")
    fresh "$jars/.installed" "$hash" && return
    # Fetch next to the target and swap, so a failed run leaves the old jars intact and a
    # dependency dropped from the pom does not linger on the classpath.
    rm -rf "$jars.new"
    # Maven's quiet mode still prints stray colour codes: show its output only on failure.
    if ! out=$(mvn -q -B -f "$pom" dependency:copy-dependencies \
        -DoutputDirectory="$jars.new" 2>&1); then
        echo "$out" >&2
        exit 1
    fi
    echo "$hash" >"$jars.new/.installed"
    rm -rf "$jars"
    mv "$jars.new" "$jars"
    echo "copied the $label jars into $jars"
}
install_jars zookeeper scripts/jars/pom.xml ZooKeeper
install_jars kafka scripts/jars/kafka/pom.xml Kafka

# Builds FerretDB into $builds_root/ferretdb, where devstack.home.build_dir("ferretdb") finds
# it. The binary `go install` makes panics ("Invalid build/version/version.txt"): its build
# reads the version from a file the module ships empty, so build from a writable copy of the
# module's source with the version written in.
build_ferretdb() {
    local target=$builds_root/ferretdb go src work out lock
    fresh "$target/.installed" "$ferretdb_version" && return
    go=$(command -v go || echo /usr/local/go/bin/go)
    [[ -x $go ]] || { echo "install.sh: FerretDB needs Go (1.22+) on PATH" >&2; exit 1; }
    mkdir -p "$builds_root"
    # One build per machine: another checkout's install.sh may be building it right now.
    exec {lock}>"$builds_root/ferretdb.lock"
    flock "$lock"
    if ! fresh "$target/.installed" "$ferretdb_version"; then
        src=$("$go" mod download -json "github.com/FerretDB/FerretDB@$ferretdb_version" |
            .venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
        [[ -f $src/go.mod ]] || { echo "install.sh: no FerretDB source at '$src'" >&2; exit 1; }
        work=$(mktemp -d "$builds_root/ferretdb.XXXXXX")
        cp -r "$src/." "$work/src"
        chmod -R u+w "$work/src"
        printf '%s\n' "$ferretdb_version" >"$work/src/build/version/version.txt"
        if ! out=$(cd "$work/src" && "$go" build -buildvcs=false -o "$work/out/ferretdb" \
            ./cmd/ferretdb 2>&1); then
            echo "$out" >&2
            rm -rf "$work"
            exit 1
        fi
        echo "$ferretdb_version" >"$work/out/.installed"
        rm -rf "$target"
        mv "$work/out" "$target"
        rm -rf "$work"
        echo "built FerretDB $ferretdb_version into $target"
    fi
    exec {lock}>&-
}
build_ferretdb

# Builds the Temporal server and temporal-sql-tool from the module go.temporal.io/server into
# $builds_root/temporal, where devstack.engine finds them, with the module's PostgreSQL
# schemas beside them: update-schema reads its versioned directories, and the binaries do
# not carry them. About 5 minutes on 2 cores the first time.
build_temporal() {
    local target=$builds_root/temporal stamp="$temporal_version $temporal_toolchain"
    local go src work out lock started
    fresh "$target/.installed" "$stamp" && return
    go=$(command -v go || echo /usr/local/go/bin/go)
    [[ -x $go ]] || { echo "install.sh: the Temporal server needs Go on PATH" >&2; exit 1; }
    mkdir -p "$builds_root"
    exec {lock}>"$builds_root/temporal.lock"
    flock "$lock"
    if ! fresh "$target/.installed" "$stamp"; then
        echo "building the Temporal server $temporal_version from its Go module (minutes)"
        started=$SECONDS
        work=$(mktemp -d "$builds_root/temporal.XXXXXX")
        if ! out=$(GOTOOLCHAIN=$temporal_toolchain GOBIN=$work/out "$go" install \
            "go.temporal.io/server/cmd/server@$temporal_version" \
            "go.temporal.io/server/cmd/tools/sql@$temporal_version" 2>&1); then
            echo "$out" >&2
            rm -rf "$work"
            exit 1
        fi
        mv "$work/out/server" "$work/out/temporal-server"
        mv "$work/out/sql" "$work/out/temporal-sql-tool"
        src=$(GOTOOLCHAIN=$temporal_toolchain "$go" mod download -json \
            "go.temporal.io/server@$temporal_version" |
            .venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
        [[ -d $src/schema/postgresql/v12 ]] ||
            { echo "install.sh: no PostgreSQL schema in '$src'" >&2; rm -rf "$work"; exit 1; }
        mkdir -p "$work/out/schema"
        cp -r "$src/schema/postgresql" "$work/out/schema/"
        chmod -R u+w "$work/out/schema"
        echo "$stamp" >"$work/out/.installed"
        rm -rf "$target"
        mv "$work/out" "$target"
        rm -rf "$work"
        echo "built the Temporal server $temporal_version into $target in $((SECONDS - started)) s"
    fi
    exec {lock}>&-
}
build_temporal

echo "install.sh: up to date"
