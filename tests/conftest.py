"""Session-wide servers for the tests: a Temporal dev server, the production-shape engine (the
real Temporal server on PostgreSQL), a ZooKeeper ensemble, a Kafka cluster and FerretDB (a
MongoDB wire-protocol server, not MongoDB).

All are real processes; a missing prerequisite fails the tests that need it with a message
saying how to fix it, rather than skipping them, so a green run always means they ran.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import pytest_asyncio
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from config.secret_scope import DIRS_ENV
from config.temporal import dev_server_flags
from devstack import processes
from devstack.engine import ProductionEngine, claim_engine
from devstack.ferretdb import FerretDB, claim_ferretdb
from devstack.jvm import JvmCluster
from devstack.kafka import KafkaCluster, claim_kafka, claim_sasl_kafka
from devstack.slots import Slot
from devstack.temporal import temporal_binary
from devstack.zookeeper import ZooKeeperEnsemble, claim_ensemble, claim_sasl_ensemble
from testkit.kafka import TEST_TOPIC_PREFIX
from tests.remediation_stage import Stage, open_stage
from tests.secure_certs import TestCa

INSTALL_HINT = "run scripts/install.sh from the repo root"

C = TypeVar("C", bound=JvmCluster)


@pytest.fixture(scope="session", autouse=True)
def environment_changes_stay_in_python() -> Iterator[None]:
    """Tests set variables through `os.environ` (`monkeypatch.setenv`); this keeps them out
    of the C environment. The Temporal core reads that environment on its own threads
    (`getenv`, as each worker starts) while a test's setup sets variables: glibc's `setenv`
    can move the environment's array and free the old one under the reader, which crashed
    the whole run (SIGSEGV in getenv, called from temporal_sdk_bridge). What our code reads
    is `os.environ`, which still changes; a child process that needs a test's variables gets
    them in its `env` (tests/helpers.py process_env)."""
    patch = pytest.MonkeyPatch()
    # os.environ calls the module's putenv and unsetenv by name.
    patch.setattr(os, "putenv", lambda key, value: None)
    patch.setattr(os, "unsetenv", lambda key: None)
    yield
    patch.undo()


@pytest.fixture(scope="session", autouse=True)
def secret_files_in_the_tests_own_dirs(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[None]:
    """Tests write their secret files and CAs under pytest's base temp dir: the secret
    scope of the workers they start (config/secret_scope.py) allows that directory, as an
    operator's allows /etc/replicante. Env secrets keep the default prefix."""
    patch = pytest.MonkeyPatch()
    patch.setenv(DIRS_ENV, str(tmp_path_factory.getbasetemp()))
    yield
    patch.undo()


@pytest.fixture(scope="session", autouse=True)
def children_stop_on_sigint() -> Iterator[None]:
    """A shell starts a background job (`scripts/test &`) with SIGINT ignored, and every
    child inherits that: the tests that stop a codec server or `events --follow` with
    Ctrl-C's signal would wait for nothing. Python's own handler in this process is reset
    to the default in each child."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


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
        dev_server_extra_args=dev_server_flags(),
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
def production_engine() -> Iterator[ProductionEngine]:
    """The real Temporal server (the release docker-compose.yml runs, built by
    scripts/install.sh) on PostgreSQL 15, with the namespace and our search attributes,
    started once per session (~15 s from nothing).

    It runs on 127.0.1.1, or 127.0.1.2 (and so on) for a second session. Its home is a
    directory of its own under /tmp, not in pytest's: under root PostgreSQL runs as the user
    postgres, who may not enter pytest's base temp dir (mode 0700).
    """
    home = Path(tempfile.mkdtemp(prefix="replicante-engine-"))
    home.chmod(0o755)
    engine, slot = claim_engine(home)
    try:
        try:
            engine.up()
        except FileNotFoundError as e:
            pytest.fail(f"{e} ({INSTALL_HINT})")
        yield engine
    finally:
        engine.down()
        slot.release()
        shutil.rmtree(home, ignore_errors=True)


def serve(cluster: C, slot: Slot, timeout: float) -> Iterator[C]:
    """Start a claimed cluster for the session and wait until it is ready; stop it and free
    its slot at the end. Missing java or jars fail the tests with the fix."""
    try:
        try:
            cluster.check_installed()
        except FileNotFoundError as e:
            pytest.fail(str(e))
        cluster.start()
        cluster.wait_ready(timeout=timeout)
        yield cluster
    finally:
        cluster.stop()
        slot.release()


def heal(cluster: C, timeout: float) -> C:
    """The cluster with every member running, none paused, and ready (e.g. a leader).

    For tests that break members: whatever the previous test left, the next starts whole.
    """
    for n in cluster.members:
        if cluster.member_paused(n):
            cluster.resume_member(n)
        cluster.start_member(n)
    cluster.wait_ready(timeout=timeout)
    return cluster


@pytest.fixture(scope="session")
def zk_ensemble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperEnsemble]:
    """A 3-member ensemble, started once per session; its logs stay in pytest's tmp dir.

    It runs on 127.0.0.11-13, away from a developer's playground on 127.0.0.1-3. A second
    test session running at the same time (another engineer), or a server someone started
    by hand on those addresses, moves it to 127.0.0.21-23, and so on.
    """
    yield from serve(*claim_ensemble(tmp_path_factory.mktemp("zk-home"), "test"), timeout=60)


@pytest.fixture
def zk_healthy(zk_ensemble: ZooKeeperEnsemble) -> ZooKeeperEnsemble:
    """The session ensemble with every member running, none paused, and a leader."""
    return heal(zk_ensemble, timeout=60)


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """A 3-broker KRaft cluster, started once per session (~10 s, formatting included); its
    logs stay in pytest's tmp dir.

    It runs on 127.0.0.14-16, away from a developer's playground on 127.0.0.4-6, and moves
    to 127.0.0.24-26 (and so on) for a second session, as the ensemble does.
    """
    yield from serve(*claim_kafka(tmp_path_factory.mktemp("kafka-home"), "test"), timeout=90)


@pytest.fixture
def kafka_healthy(kafka_cluster: KafkaCluster) -> Iterator[KafkaCluster]:
    """The session cluster with every broker running, none paused, all unfenced, an active
    controller, and no partition under-replicated.

    The topics the test made (tests.helpers.new_topic) go afterwards: one with a strict
    min.insync.replicas would otherwise make every later stop of a broker unsafe."""
    heal(kafka_cluster, timeout=60)
    kafka_cluster.wait_in_sync(timeout=60)
    yield kafka_cluster
    heal(kafka_cluster, timeout=60)
    with kafka_cluster.admin(timeout=30) as admin:
        mine = [t for t in admin.list_topics() if t.startswith(TEST_TOPIC_PREFIX)]
        if mine:
            admin.delete_topics(mine, timeout_ms=30_000)


@pytest_asyncio.fixture(loop_scope="session")
async def stage(
    temporal_env: WorkflowEnvironment, zk_healthy: ZooKeeperEnsemble, tmp_path: Path
) -> AsyncIterator[Stage]:
    """A cluster of the session ensemble with a core worker and a real agent per member."""
    async with open_stage(temporal_env, zk_healthy, tmp_path) as opened:
        yield opened


@pytest.fixture(scope="session")
def zk_sasl_ensemble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperEnsemble]:
    """A 3-member ensemble that requires SASL DIGEST-MD5 logins, as the user `monitor` with
    a password made for the session (`sasl_users`), started once per session.

    It has slots of its own (127.0.0.17-19, then 27-29, ...): a test meant for it never
    reaches the plain ensemble by mistake, nor the other way round.
    """
    users = {"monitor": f"pw-{uuid.uuid4().hex}"}
    home = tmp_path_factory.mktemp("zk-sasl-home")
    yield from serve(*claim_sasl_ensemble(home, "sasl", users), timeout=60)


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCa:
    """A CA for the session's TLS servers, made by openssl now; its keys stay in tmp."""
    return TestCa.create(tmp_path_factory.mktemp("pki"), "replicante-test-ca")


@pytest.fixture(scope="session")
def kafka_sasl_cluster(
    tmp_path_factory: pytest.TempPathFactory, test_ca: TestCa
) -> Iterator[KafkaCluster]:
    """A 1-broker KRaft cluster whose client listeners want SASL logins (PLAIN,
    SCRAM-SHA-256, SCRAM-SHA-512) as the user `monitor` with a password made for the
    session (`sasl_users`): SASL_PLAINTEXT on its `addresses`, SASL_SSL with a certificate
    of `test_ca` on its `tls_addresses`. Started once per session on slots of its own."""
    users = {"monitor": f"pw-{uuid.uuid4().hex}"}
    home = tmp_path_factory.mktemp("kafka-sasl-home")
    cluster, slot = claim_sasl_kafka(home, "sasl", users)
    cluster.tls_keystore = test_ca.issue("kafka-sasl", cluster.ips).combined
    yield from serve(cluster, slot, timeout=90)


@pytest.fixture(scope="session")
def ferretdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FerretDB]:
    """FerretDB on SQLite, requiring the login `monitor` with a password made for the
    session, started once per session (well under a second). Not MongoDB: one server that
    calls itself the primary of replica set rs0, with no replica set behind it.

    It runs on 127.0.0.20:27017, or 127.0.0.30 (and so on) for a second session.
    """
    home = tmp_path_factory.mktemp("ferretdb-home")
    server, slot = claim_ferretdb(home, "monitor", f"pw-{uuid.uuid4().hex}")
    try:
        try:
            server.start()
        except FileNotFoundError as e:
            pytest.fail(f"{e} ({INSTALL_HINT})")
        yield server
    finally:
        server.stop()
        slot.release()


@pytest.fixture
def ferretdb_running(ferretdb: FerretDB) -> Iterator[FerretDB]:
    """The session's FerretDB, running and not paused, whatever the previous test left
    (tests kill and SIGSTOP it)."""
    ferretdb.start()
    yield ferretdb
    pid = ferretdb.pid()
    if pid is not None and processes.is_paused(pid):
        processes.send_signal(pid, signal.SIGCONT)
