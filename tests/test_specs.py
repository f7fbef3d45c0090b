"""Malformed cluster specs are refused with one line per problem naming file, field and reason.

The specs live in tests/specs/bad/, one problem each (see the comment at the top of each
file), except two-problems.yaml. Through the CLI they must exit 2 before anything connects:
REPLICANTE_TEMPORAL_ADDRESS points at a port nobody listens on, so an attempt to connect
would show up as a different error (exit 1, "is it running?").
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from client.cli import main
from config.settings import REPO_ROOT
from models import Kind, SpecError, load_spec

BAD = Path(__file__).parent / "specs" / "bad"
PLAYGROUND = REPO_ROOT / "playground" / "zookeeper.yaml"

# file -> [(where, reason pattern)], one per problem, in the order they are reported. `where`
# is the text between the file name and the reason: a field path, "(top level)" or a line.
EXPECTED: dict[str, list[tuple[str, str]]] = {
    "not-yaml.yaml": [("line 3", r"expected ',' or '\]'")],
    "not-a-mapping.yaml": [("(top level)", r"expected a mapping, got list")],
    "missing-cluster-id.yaml": [("cluster_id", r"Field required")],
    "bad-cluster-id.yaml": [("cluster_id", r"is not an id: use 1-63 of a-z 0-9")],
    "unknown-kind.yaml": [("kind", r"Input should be 'zookeeper', 'kafka' or 'mongodb'")],
    "no-nodes.yaml": [("nodes", r"at least 1 item")],
    "duplicate-node-id.yaml": [("nodes", r"node_id 'zk1' appears twice: nodes\.0 and nodes\.1")],
    "duplicate-address.yaml": [
        ("nodes", r"address '127\.0\.0\.1:2181' appears twice: nodes\.0 and nodes\.1")
    ],
    "address-without-port.yaml": [("nodes.1.address", r"expected HOST:PORT with a port 1-65535")],
    "port-out-of-range.yaml": [("nodes.1.address", r"expected HOST:PORT .*got '127.0.0.2:70000'")],
    "unknown-field.yaml": [
        ("nodes", r"Field required"),
        ("node", r"Extra inputs are not permitted"),
    ],
    "unknown-node-field.yaml": [
        ("nodes.1.address", r"Field required"),
        ("nodes.1.adress", r"Extra inputs are not permitted"),
    ],
    "negative-interval.yaml": [("probe.interval_s", r"greater than or equal to 0\.1")],
    "timeout-over-watch-max.yaml": [("probe", r"timeout_s must not exceed watch_max_s")],
    "secret-env-and-file.yaml": [("secrets.sasl_password", r"give exactly one of 'env' or 'file'")],
    "secret-value.yaml": [("secrets.sasl_password", r"valid dictionary or instance of SecretRef")],
    "members-over-nodes.yaml": [
        ("(top level)", r"expect\.members is 3 but only 2 nodes are listed")
    ],
    "unknown-policy.yaml": [("remediation.restart_dead_member", r"'off', 'approve' or 'auto'")],
    "unknown-playbook.yaml": [
        ("remediation", r"'restart_dead_broker' is not a zookeeper playbook")
    ],
    "port-in-other-digits.yaml": [("nodes.0.address", r"expected HOST:PORT with a port 1-65535")],
    "bad-ipv6-address.yaml": [("nodes.0.address", r"got '\[:\]:2181'")],
    "same-address-spelled-twice.yaml": [
        ("nodes", r"address 'LOCALHOST:02181' appears twice: nodes\.0 and nodes\.1")
    ],
    "only-node-unknown-field.yaml": [("nodes.0.bogus", r"Extra inputs are not permitted")],
    "two-problems.yaml": [
        ("cluster_id", r"is not an id"),
        ("kind", r"Input should be 'zookeeper', 'kafka' or 'mongodb'"),
    ],
}


def bad(name: str) -> Path:
    return BAD / name


def check_lines(lines: list[str], path: Path, expected: list[tuple[str, str]]) -> None:
    assert len(lines) == len(expected), lines
    for line, (where, reason) in zip(lines, expected, strict=True):
        prefix = f"{path}: {where}: "
        assert line.startswith(prefix), f"{line!r} does not start with {prefix!r}"
        assert re.search(reason, line.removeprefix(prefix)), f"{reason!r} not in {line!r}"


def test_every_bad_spec_has_an_expectation() -> None:
    on_disk = sorted(p.name for p in BAD.glob("*.yaml"))
    assert on_disk == sorted(EXPECTED)
    assert len(on_disk) >= 10


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_load_spec_names_file_field_and_reason(name: str) -> None:
    path = bad(name)
    with pytest.raises(SpecError) as raised:
        load_spec(path)
    check_lines(str(raised.value).splitlines(), path, EXPECTED[name])


def test_unreadable_spec() -> None:
    missing = BAD / "no-such-spec.yaml"
    with pytest.raises(SpecError, match=rf"^{re.escape(str(missing))}: cannot read: No such file"):
        load_spec(missing)
    with pytest.raises(SpecError, match=rf"^{re.escape(str(BAD))}: cannot read: Is a directory"):
        load_spec(BAD)


def test_good_spec_loads() -> None:
    spec = load_spec(PLAYGROUND)
    assert spec.cluster_id == "playground"
    assert spec.kind is Kind.ZOOKEEPER
    assert [(n.node_id, n.host, n.port) for n in spec.nodes] == [
        ("zk1", "127.0.0.1", 2181),
        ("zk2", "127.0.0.2", 2181),
        ("zk3", "127.0.0.3", 2181),
    ]
    assert spec.probe.interval_s == 2
    assert spec.probe.hold_connections is True


# --- input YAML and pydantic would let through unless told not to ---------------------------

SHOULD_BE_REFUSED = [
    pytest.param(
        b"\xff\xfe\x00\x01 not text",
        r"(utf-8|UTF-8|decode|not text)",
        id="not-utf8",
    ),
    pytest.param(
        b"cluster_id: c1\nkind: zookeeper\nnodes:\n  - {node_id: zk1, address: 'a:1'}\n"
        b"cluster_id: c2\n",
        r"cluster_id.*(duplicate|twice)",
        id="duplicate-key",
    ),
    pytest.param(
        b"cluster_id: c1\nkind: zookeeper\nnodes:\n  - {node_id: zk1, address: 'a:1'}\n"
        b"probe: {interval_s: true}\n",
        r"probe\.interval_s",
        id="bool-interval",
    ),
    pytest.param(
        b"cluster_id: c1\nkind: zookeeper\nnodes:\n  - {node_id: zk1, address: 'a:1'}\n"
        b"remediate: {agent_wait_s: 1}\n",
        r"remediate\.agent_wait_s: Input should be greater than or equal to 5$",
        id="agent-wait-below-its-floor",
    ),
    pytest.param(
        b"cluster_id: c1\nkind: zookeeper\nnodes:\n  - {node_id: zk1, address: '::::2181'}\n",
        r"nodes\.0\.address",
        id="address-no-host",
    ),
    pytest.param(
        b"cluster_id: c1\nkind: zookeeper\nnodes:\n  - {node_id: zk1, address: 'a:1'}\n"
        b"probe: {interval_s: " + b"9" * 5000 + b"}\n",
        r": \(yaml\): a number too long to read$",
        id="5000-digit-number",
    ),
    pytest.param(
        b"cluster_id: " + b"[" * 20_000 + b"]" * 20_000 + b"\n",
        r": line 1: exceeded maximum nesting depth$",
        id="20000-deep",
    ),
    pytest.param(
        b"cluster_id: " + b"a" * 1_000_000 + b"\nkind: zookeeper\n"
        b"nodes:\n  - {node_id: zk1, address: 'a:1'}\n",
        r"^[^\n]{0,400}\(1000000 characters\) is not an id[^\n]*$",
        id="1mb-id-not-echoed",
    ),
    pytest.param(
        b"cluster_id: c1\nkind: zookeeper\nnodes:\n  - {node_id: zk1, address: 'a"
        + b"b" * 300
        + b":1'}\n",
        r"nodes\.0\.address: expected HOST:PORT .*\(303 characters\)",
        id="host-longer-than-dns",
    ),
    pytest.param(
        b"cluster_id: c1\nkind: zookeeper\nnodes:\n"
        + b"".join(b"  - {node_id: zk%d, address: 'nohost'}\n" % n for n in range(1000)),
        r"^(?:[^\n]*nodes\.\d+\.address[^\n]*\n){10}[^\n]*: and 990 more problem\(s\)[^\n]*$",
        id="1000-bad-addresses-in-11-lines",
    ),
    pytest.param(
        b"cluster_id: c1\nkind: zookeeper\nnodes:\n  - {node_id: zk1, address: 'a:1'}\n"
        b"probe: {interval_s: 1.0e-9}\n",
        r"probe\.interval_s: Input should be greater than or equal to 0\.1$",
        id="interval-a-nanosecond",
    ),
    pytest.param(
        b"cluster_id: c1\nkind: zookeeper\nnodes:\n  - {node_id: zk1, address: 'a:1'}\n"
        b"probe: {timeout_s: 1.0e-9}\n",
        r"probe\.timeout_s: Input should be greater than or equal to 0\.1$",
        id="timeout-a-nanosecond",
    ),
    pytest.param(
        b"cluster_id: c1\nkind: zookeeper\nnodes:\n"
        + b"".join(b"  - {node_id: zk%d, address: 'h%d:1'}\n" % (n, n) for n in range(10_000)),
        r"^[^\n]*: nodes: Tuple should have at most 256 items after validation, not 10000$",
        id="10000-nodes",
    ),
]


@pytest.mark.parametrize(("text", "reason"), SHOULD_BE_REFUSED)
def test_should_be_refused(tmp_path: Path, text: bytes, reason: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_bytes(text)
    with pytest.raises(SpecError) as raised:
        load_spec(path)
    assert str(raised.value).startswith(f"{path}: ")
    assert re.search(reason, str(raised.value))


# --- through the CLI -----------------------------------------------------------------------


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def nowhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Temporal at a port nobody listens on; store and home in tmp."""
    address = f"127.0.0.1:{unused_port()}"
    monkeypatch.setenv("REPLICANTE_TEMPORAL_ADDRESS", address)
    monkeypatch.setenv("REPLICANTE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("REPLICANTE_STORE", str(tmp_path / "events.db"))
    monkeypatch.setenv("REPLICANTE_TASK_QUEUE", "spec-tests")
    return address


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_cli_apply_refuses_bad_spec(
    name: str, nowhere: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = bad(name)
    code = main(["cluster", "apply", "-f", str(path)])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert out == ""
    assert "is it running" not in err and "Failed client connect" not in err
    lines = err.splitlines()
    assert all(line.startswith(f"replicante: error: {path}: ") for line in lines), lines
    check_lines([line.removeprefix("replicante: error: ") for line in lines], path, EXPECTED[name])


def test_cli_apply_good_spec_does_try_to_connect(
    nowhere: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The control for the tests above: a valid spec gets as far as connecting."""
    code = main(["cluster", "apply", "-f", str(PLAYGROUND)])
    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith("replicante: error: ")
    assert f"(Temporal at {nowhere}; is it running?" in err


def test_cli_apply_missing_file(nowhere: str, capsys: pytest.CaptureFixture[str]) -> None:
    missing = BAD / "absent.yaml"
    assert main(["cluster", "apply", "-f", str(missing)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"replicante: error: {missing}: cannot read: No such file or directory\n"


def test_console_script_prints_only_the_error(nowhere: str) -> None:
    """The real `replicante` process: no log lines or traceback around the one error line."""
    path = bad("unknown-kind.yaml")
    script = Path(sys.executable).parent / "replicante"
    done = subprocess.run(
        [str(script), "cluster", "apply", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr == (
        f"replicante: error: {path}: kind: Input should be 'zookeeper', 'kafka' or 'mongodb'\n"
    )
