"""The adapter's role detection against the driver specifications' Server Discovery and
Monitoring rules (mongodb/specifications, source/server-discovery-and-monitoring): where a
role from one `hello` differs from the server type a driver gives it, and why.

The specifications' test files are under CC BY-NC-SA 3.0, so none is copied here: the
hellos below are ours, written from the cases those files show. The last test runs our role
logic over every hello of their rs/, sharded/ and single/ files and fails on any difference
not named here. It reads them where the Go driver's module vendors them
(go.mongodb.org/mongo-driver v1.17.10, testdata/server-discovery-and-monitoring: 100 files,
173 hellos, 152 the same, 16 stale primaries, 5 hidden secondaries), which
scripts/install.sh fetches into Go's module cache, recording the directory in
.venv/.replicante-sdam-dir. REPLICANTE_TEST_SDAM_DIR overrides it, e.g. with a
specifications checkout's `source/server-discovery-and-monitoring/tests` (at commit
bed11334f49045c8c8ffae9b47f3ddba4f84f984: 167 the same, 18 stale primaries, 5 hidden
secondaries). Without the files the test fails, naming the fix, as a missing jar does.

The differences, both deliberate:

- A hidden secondary is RSOther to a driver (no reads or writes go to it); to us it is a
  SECONDARY, since it replicates, votes when it has a vote, and may be stopped or counted
  as the set counts it. It is never a step-down target (models/safety/mongodb.py).
- A primary whose electionId or setVersion is older than one already seen is Unknown to a
  driver; we give each server the role its own hello states, and the view decides between
  two primaries by the term of the set's replSetGetStatus (activities/mongodb/view.py), or
  names no leader when no status says.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId, json_util

from activities.mongodb.replica_set import _own_role, replica_set
from activities.mongodb.replies import Reading
from activities.mongodb.view import cluster_view
from config.settings import REPO_ROOT
from models import Role, parse_spec
from tests.conftest import INSTALL_HINT
from tests.test_mongodb_parsing import T0

SDAM_TYPES = {
    Role.PRIMARY: {"RSPrimary"},
    Role.SECONDARY: {"RSSecondary"},
    Role.ARBITER: {"RSArbiter"},
    Role.ROUTER: {"Mongos"},
    Role.STANDALONE: {"Standalone"},
    Role.LOOKING: {"RSOther", "RSGhost"},
    Role.UNKNOWN: {"Unknown"},
}
# (the specification's type, our role): why.
KNOWN_DIFFERENCES = {
    ("RSOther", Role.SECONDARY): "a hidden secondary",
    ("Unknown", Role.PRIMARY): "a primary older than another by electionId or setVersion",
}
WIRE = {"minWireVersion": 0, "maxWireVersion": 21}


def role(address: str, hello: dict[str, Any]) -> Role:
    """The role the view gives a server that answered `hello`: a reply that is no usable
    hello makes the server unreachable, of unknown role."""
    reading = Reading(address, {"hello": hello})
    return Role.UNKNOWN if reading.failure is not None else _own_role(reading)


def rs(**fields: Any) -> dict[str, Any]:
    return {"ok": 1, "setName": "rs", "hosts": ["a:27017", "b:27017"], **WIRE, **fields}


@pytest.mark.parametrize(
    ("hello", "sdam", "ours"),
    [
        (rs(isWritablePrimary=True, secondary=False), "RSPrimary", Role.PRIMARY),
        (rs(ismaster=True, secondary=False), "RSPrimary", Role.PRIMARY),
        (rs(isWritablePrimary=False, secondary=True), "RSSecondary", Role.SECONDARY),
        (rs(isWritablePrimary=False, secondary=False, arbiterOnly=True), "RSArbiter", Role.ARBITER),
        # In a set but neither primary nor secondary: starting, syncing, recovering.
        (rs(isWritablePrimary=False, secondary=False), "RSOther", Role.LOOKING),
        # Started with --replSet, no config yet.
        (
            {"ok": 1, "isWritablePrimary": False, "isreplicaset": True, **WIRE},
            "RSGhost",
            Role.LOOKING,
        ),
        ({"ok": 1, "isWritablePrimary": True, "msg": "isdbgrid", **WIRE}, "Mongos", Role.ROUTER),
        ({"ok": 1, "isWritablePrimary": True, **WIRE}, "Standalone", Role.STANDALONE),
        ({"ok": 0, "errmsg": "not ready"}, "Unknown", Role.UNKNOWN),
        ({}, "Unknown", Role.UNKNOWN),
        # The differences:
        (rs(isWritablePrimary=False, secondary=True, hidden=True), "RSOther", Role.SECONDARY),
    ],
    ids=[
        "primary",
        "primary-legacy-ismaster",
        "secondary",
        "arbiter",
        "other",
        "ghost",
        "mongos",
        "standalone",
        "ok-0",
        "empty",
        "hidden-secondary-differs",
    ],
)
def test_role_from_one_hello_against_the_sdam_server_type(
    hello: dict[str, Any], sdam: str, ours: Role
) -> None:
    found = role("a:27017", hello)
    assert found is ours
    if sdam in SDAM_TYPES[found]:
        return
    assert (sdam, found) in KNOWN_DIFFERENCES


def test_a_stale_primary_keeps_its_own_role_and_the_view_names_no_leader_without_a_status() -> None:
    # Two hellos claiming the primary role, the second of a newer election (electionId):
    # a driver marks the first Unknown. From hellos alone we give both their own word.
    old = rs(isWritablePrimary=True, electionId=ObjectId("7fffffff0000000000000001"), setVersion=1)
    new = rs(isWritablePrimary=True, electionId=ObjectId("7fffffff0000000000000002"), setVersion=1)
    assert role("a:27017", old) is Role.PRIMARY and role("b:27017", new) is Role.PRIMARY
    spec = parse_spec(
        {
            "cluster_id": "c1",
            "kind": "mongodb",
            "nodes": [
                {"node_id": "a", "address": "a:27017"},
                {"node_id": "b", "address": "b:27017"},
            ],
        }
    )
    readings = {
        "a:27017": Reading("a:27017", {"hello": old | {"me": "a:27017"}}),
        "b:27017": Reading("b:27017", {"hello": new | {"me": "b:27017"}}),
    }
    assert not replica_set(list(readings.values())).status
    assert cluster_view(spec, readings, T0).leader is None


# Where scripts/install.sh records the directory of the Go driver's SDAM files.
SDAM_RECORD = REPO_ROOT / ".venv" / ".replicante-sdam-dir"


def sdam_dir() -> Path:
    """REPLICANTE_TEST_SDAM_DIR, else the directory scripts/install.sh recorded; fails the
    test, saying how to fix it, when neither holds the files."""
    fix = f"{INSTALL_HINT}; it needs Go"
    if env := os.environ.get("REPLICANTE_TEST_SDAM_DIR"):
        if not (Path(env) / "rs").is_dir():
            pytest.fail(f"REPLICANTE_TEST_SDAM_DIR={env} holds no SDAM test files (no rs/)")
        return Path(env)
    if not SDAM_RECORD.is_file():
        pytest.fail(f"no SDAM test files: {SDAM_RECORD} is missing ({fix})")
    root = Path(SDAM_RECORD.read_text().strip())
    if not (root / "rs").is_dir():
        pytest.fail(f"no SDAM test files in {root}, as {SDAM_RECORD} says ({fix})")
    return root


def test_every_sdam_spec_hello_gets_its_type_or_a_known_difference() -> None:
    root = sdam_dir()
    outcomes: Counter[str] = Counter()
    unexplained = []
    for path in sorted(p for d in ("rs", "sharded", "single") for p in (root / d).glob("*.json")):
        test = json_util.loads(path.read_text())
        for phase in test.get("phases", []):
            servers = phase.get("outcome", {}).get("servers", {})
            # Each server's type in the outcome follows its last reply in the phase.
            last = dict(phase.get("responses") or [])
            for address, hello in last.items():
                if address not in servers:
                    continue
                sdam, found = servers[address]["type"], role(address, hello)
                if sdam in SDAM_TYPES[found]:
                    outcomes["same"] += 1
                elif (sdam, found) in KNOWN_DIFFERENCES:
                    outcomes[KNOWN_DIFFERENCES[sdam, found]] += 1
                else:
                    unexplained.append(
                        f"{path.parent.name}/{path.name} {address}: {sdam} vs {found}"
                    )
    assert outcomes["same"] > 100, outcomes
    assert unexplained == []
