"""Session-wide servers for the tests: one Temporal dev server and one ZooKeeper ensemble.

Both are real processes; a missing prerequisite fails the tests that need it with a message
saying how to fix it, rather than skipping them, so a green run always means they ran.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from devstack.home import jars_dir
from devstack.temporal import temporal_binary
from devstack.zookeeper import ZooKeeperEnsemble, claim_ensemble
from workflows import search_attributes

INSTALL_HINT = "run scripts/install.sh from the repo root"


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """A dev server on a free port with our search attributes, and a pydantic-aware client."""
    try:
        binary = temporal_binary()
    except FileNotFoundError as e:
        pytest.fail(f"{e} ({INSTALL_HINT})")
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(binary),
        data_converter=pydantic_data_converter,
        dev_server_extra_args=search_attributes.dev_server_flags(),
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
def zk_ensemble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperEnsemble]:
    """A 3-member ensemble, started once per session; its logs stay in pytest's tmp dir.

    It runs on 127.0.0.11-13, away from a developer's playground on 127.0.0.1-3. A second
    test session running at the same time (another engineer), or a server someone started
    by hand on those addresses, moves it to 127.0.0.21-23, and so on.
    """
    if shutil.which("java") is None:
        pytest.fail("ZooKeeper needs `java` on PATH (Java 17 works)")
    jars = jars_dir("zookeeper")
    if not any(jars.glob("zookeeper-*.jar")):
        pytest.fail(f"no ZooKeeper jars in {jars}: {INSTALL_HINT}")

    ensemble, slot = claim_ensemble(tmp_path_factory.mktemp("zk-home"), "test", jars=jars)
    try:
        ensemble.start()
        ensemble.wait_ready(timeout=60)
        yield ensemble
    finally:
        ensemble.stop()
        slot.release()


@pytest.fixture
def zk_healthy(zk_ensemble: ZooKeeperEnsemble) -> ZooKeeperEnsemble:
    """The session ensemble with every member running, none paused, and a leader.

    For tests that break members: whatever the previous test left, this one starts whole.
    """
    for n in zk_ensemble.members:
        if zk_ensemble.member_paused(n):
            zk_ensemble.resume_member(n)
        zk_ensemble.start_member(n)
    zk_ensemble.wait_ready(timeout=60)
    return zk_ensemble
