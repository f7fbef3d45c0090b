"""A Kafka cluster of real JVMs in KRaft mode, one broker per loopback IP so all use the
usual ports.

Every broker is also a controller (process.roles=broker,controller) and the metadata quorum
is fixed in the config (controller.quorum.voters): three JVMs make a whole cluster, as small
as a real one gets, with no ZooKeeper (Kafka 4 has none).
"""

from __future__ import annotations

import base64
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.protocol.admin import DescribeClusterRequest, DescribeQuorumRequest
from kafka.protocol.metadata import MetadataRequest
from kafka.protocol.parser import KafkaProtocol

from devstack.jvm import JvmCluster, claim_cluster, jvm_flags
from devstack.slots import Slot

SERVER_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"

# Logs go to stdout, which the broker's log file captures along with JVM crash output.
# shutdownHook="disable" keeps log4j logging until the JVM is gone: its own hook would stop
# it while Kafka still shuts down, and the reason a stop takes long would be lost.
LOG4J2_XML = """\
<Configuration status="WARN" shutdownHook="disable">
  <Appenders>
    <Console name="out" target="SYSTEM_OUT">
      <PatternLayout pattern="%d{ISO8601} %-5level [%thread] %logger{36} - %msg%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Root level="INFO"><AppenderRef ref="out"/></Root>
  </Loggers>
</Configuration>
"""


def new_cluster_id() -> str:
    """A random id as Kafka's Uuid.randomUuid() makes them: 16 bytes in URL-safe base64
    without padding, never starting with "-" (the storage tool would take it for a flag)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def ask(host: str, port: int, request: Any, timeout: float = 1.0) -> Any | None:
    """One request to one broker on a connection of its own: the decoded response, or None
    if the broker does not answer within `timeout` seconds.

    kafka-python's admin client sends each request to a broker of its choosing, which may
    be a SIGSTOPped one (its kernel accepts the connection): then it waits 10 s for a reply.
    Its own protocol codec on a plain socket lets us pick the broker.
    """
    codec = KafkaProtocol(client_id="devstack")
    codec.send_request(request)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(codec.send_bytes())
            while chunk := sock.recv(65536):
                if responses := codec.receive_bytes(chunk):
                    return responses[0][1]
    except (OSError, KafkaError):
        pass
    return None


def describe_cluster_request() -> Any:
    # v2 (Kafka 4.0+) lists fenced brokers too, flagged.
    return DescribeClusterRequest(
        version=2, include_cluster_authorized_operations=False, include_fenced_brokers=True
    )


def describe_quorum_request() -> Any:
    # What KafkaAdminClient.describe_metadata_quorum() sends: the metadata log's partition.
    topic = DescribeQuorumRequest.TopicData
    partition = topic.PartitionData(partition_index=0)
    return DescribeQuorumRequest(
        version=2, topics=[topic(topic_name="__cluster_metadata", partitions=[partition])]
    )


def metadata_request() -> Any:
    # Every topic (topics=None); Kafka 4 serves versions 4 to 13.
    return MetadataRequest(version=12, topics=None, allow_auto_topic_creation=False)


@dataclass(frozen=True)
class ClusterView:
    """The cluster's metadata as one running broker answered."""

    cluster_id: str
    unfenced: frozenset[int]
    """Registered brokers the controller lets serve."""
    fenced: frozenset[int]
    """Registered brokers that stopped heartbeating (or have not caught up yet)."""
    controller: int | None
    """The KRaft quorum leader, which is the active controller; None while there is none."""


SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class KafkaCluster(JvmCluster):
    """Brokers are numbered 1..N, which are their KRaft node ids; broker n runs on ips[n-1]
    in <home>/kafka/<name>/<n>/ (its log dirs in data/).

    With `sasl_users` (user -> password) clients log in on `port` (SASL_PLAINTEXT, with
    PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 as any of them), and the brokers talk among
    themselves, and devstack to them, on a plaintext listener of `port + 2`. With
    `tls_keystore` too (one PEM file of the broker's private key and certificate), they log
    in over TLS on `port + 3` as well (SASL_SSL).
    """

    service = "kafka"
    product = "Kafka"
    title = "Kafka cluster"
    noun = "broker"
    main_class = SERVER_CLASS
    config_name = "server.properties"
    jar_glob = "kafka_2.13-*.jar"

    def __init__(
        self,
        home: Path,
        name: str,
        ips: tuple[str, ...] = ("127.0.0.4", "127.0.0.5", "127.0.0.6"),
        port: int = 9092,
        controller_port: int = 9093,
        heap_mb: int = 256,
        jars: Path | None = None,
        java: str | None = None,
        sasl_users: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(home, name, ips, heap_mb, jars, java)
        self.port = port
        self.controller_port = controller_port
        self.sasl_users = dict(sasl_users or {})
        self.admin_port = port + 2 if self.sasl_users else port
        """Where devstack itself asks: no login there."""
        self.tls_port = port + 3
        self.tls_keystore: Path | None = None
        """Set before start, for the SASL_SSL listener."""

    @property
    def ports(self) -> tuple[int, ...]:
        ports = (self.port, self.controller_port, self.admin_port)
        return tuple(dict.fromkeys(ports + ((self.tls_port,) if self.sasl_users else ())))

    @property
    def tls_addresses(self) -> list[str]:
        return [f"{ip}:{self.tls_port}" for ip in self.ips]

    @property
    def bootstrap(self) -> str:
        """All brokers, comma-separated, as kafka-python's `bootstrap_servers` takes them."""
        return ",".join(self.addresses)

    def _listeners(self, ip: str) -> list[str]:
        if not self.sasl_users:
            return [
                f"listeners=PLAINTEXT://{ip}:{self.port},CONTROLLER://{ip}:{self.controller_port}",
                f"advertised.listeners=PLAINTEXT://{ip}:{self.port}",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            ]
        plain = "org.apache.kafka.common.security.plain.PlainLoginModule required " + " ".join(
            f'user_{user}="{secret}"' for user, secret in self.sasl_users.items()
        )
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule required"
        client = [f"CLIENT://{ip}:{self.port}", f"INTERNAL://{ip}:{self.admin_port}"]
        protocols = ["CLIENT:SASL_PLAINTEXT", "INTERNAL:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        names = ["client"]
        if self.tls_keystore is not None:
            client.append(f"SECURE://{ip}:{self.tls_port}")
            protocols.append("SECURE:SASL_SSL")
            names.append("secure")
        lines = [
            f"listeners={','.join(client)},CONTROLLER://{ip}:{self.controller_port}",
            f"advertised.listeners={','.join(client)}",
            "inter.broker.listener.name=INTERNAL",
            f"listener.security.protocol.map={','.join(protocols)}",
        ]
        for name in names:
            lines += [
                f"listener.name.{name}.sasl.enabled.mechanisms={','.join(SASL_MECHANISMS)}",
                f"listener.name.{name}.plain.sasl.jaas.config={plain};",
                f"listener.name.{name}.scram-sha-256.sasl.jaas.config={scram};",
                f"listener.name.{name}.scram-sha-512.sasl.jaas.config={scram};",
            ]
        if self.tls_keystore is not None:
            lines += [
                "listener.name.secure.ssl.keystore.type=PEM",
                f"listener.name.secure.ssl.keystore.location={self.tls_keystore}",
            ]
        return lines

    def _scram_users(self) -> list[str]:
        """The storage tool's flags that store each user's SCRAM credentials (KRaft keeps
        them in the metadata log, written at format time)."""
        return [
            flag
            for user, secret in self.sasl_users.items()
            for mechanism in SASL_MECHANISMS[1:]
            for flag in ("--add-scram", f"{mechanism}=[name={user},password={secret}]")
        ]

    def _jvm_options(self, n: int) -> list[str]:
        return [f"-Dlog4j2.configurationFile={self.member_dir(n) / 'log4j2.xml'}"]

    # --- files -----------------------------------------------------------------------------

    def cluster_id(self) -> str:
        """The id every broker's log dir is formatted under: made once, then kept in a file,
        since a broker refuses to start in a log dir formatted for another cluster."""
        path = self.dir / "cluster.id"
        if not path.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(new_cluster_id() + "\n")
            tmp.replace(path)
        return path.read_text().strip()

    def _formatted(self, n: int) -> bool:
        return (self.member_dir(n) / "data" / "meta.properties").exists()

    def start(self) -> None:
        """Start every broker not already running; does not wait for them (wait_ready).

        Brokers that never ran get their log dirs formatted first, all at once: each format
        is a JVM start of its own (~2 s).
        """
        self._format([n for n in self.members if not self.member_running(n)])
        super().start()

    def _stop_hopeless(self, alive: list[int]) -> bool:
        """Too few brokers left to make a controller quorum.

        A broker's controlled shutdown needs the quorum (a majority of the brokers, which
        are the controllers too) to commit its last records. Stopped together, those that
        finish first exit and take their votes with them: the last one would wait for a
        quorum that cannot come back (Kafka gives up after 5 minutes).
        """
        return len(alive) < len(self.members) // 2 + 1

    def _write_files(self, n: int) -> None:
        self._write_config(n)
        self._format([n])

    def _format(self, brokers: list[int]) -> None:
        """Format the log dirs of those `brokers` that are not yet, with the release's own
        storage tool (kafka-storage.sh format), under the cluster's id."""
        brokers = [n for n in brokers if not self._formatted(n)]
        if not brokers:
            return
        java = self.check_installed()
        cluster_id = self.cluster_id()
        runs: dict[int, subprocess.Popen[bytes]] = {}
        for n in brokers:
            self._write_config(n)
            argv = [java, *jvm_flags(128), *self._jvm_options(n), "-cp", f"{self.jars}/*"]
            argv += [STORAGE_TOOL, "format", "--cluster-id", cluster_id]
            argv += ["--config", str(self._config(n)), "--ignore-formatted", *self._scram_users()]
            runs[n] = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for n, run in runs.items():
            output, _ = run.communicate(timeout=60)
            if run.returncode != 0:
                raise RuntimeError(
                    f"formatting the log dir of Kafka broker {n} failed: "
                    f"{output.decode(errors='replace').strip()}"
                )

    def _write_config(self, n: int) -> None:
        member = self.member_dir(n)
        (member / "data").mkdir(parents=True, exist_ok=True)
        (member / "log4j2.xml").write_text(LOG4J2_XML)
        ip = self.ips[n - 1]
        voters = ",".join(
            f"{m}@{voter_ip}:{self.controller_port}"
            for m, voter_ip in zip(self.members, self.ips, strict=True)
        )
        # A cluster of one broker (enough to try logins on) cannot keep three copies.
        replicas, min_isr = min(3, len(self.ips)), min(2, len(self.ips))
        lines = [
            "process.roles=broker,controller",
            f"node.id={n}",
            f"controller.quorum.voters={voters}",
            *self._listeners(ip),
            "controller.listener.names=CONTROLLER",
            f"log.dirs={member / 'data'}",
            # A broker that stops heartbeating is fenced after 3 s (default 9 s), and a
            # replica that stops fetching leaves the ISR after 5 s (default 30 s): a fault
            # shows in the metadata within seconds, as a monitor under test needs.
            "broker.heartbeat.interval.ms=500",
            "broker.session.timeout.ms=3000",
            "replica.lag.time.max.ms=5000",
            # Production-like durability: with one broker down an acks=all write still
            # succeeds, with two it is refused. Internal topics alike.
            f"default.replication.factor={replicas}",
            f"min.insync.replicas={min_isr}",
            f"offsets.topic.replication.factor={replicas}",
            f"transaction.state.log.replication.factor={replicas}",
            f"transaction.state.log.min.isr={min_isr}",
            # 50 partitions each (the defaults) are 150 replicas per topic to create on the
            # first consumer group or transaction: seconds of work on two cores.
            "offsets.topic.num.partitions=3",
            "transaction.state.log.num.partitions=3",
            # A misspelt topic fails loudly instead of appearing with one partition.
            "auto.create.topics.enable=false",
            # A group's first consumer gets its partitions at once, not after 3 s.
            "group.initial.rebalance.delay.ms=0",
        ]
        config = self._config(n)
        config.touch(mode=0o600)  # the users' passwords, with SASL
        config.write_text("\n".join(lines) + "\n")

    # --- metadata --------------------------------------------------------------------------

    def _serving(self) -> list[int]:
        # A paused broker accepts connections (the kernel does that) but never replies.
        return [n for n in self.members if self.member_running(n) and not self.member_paused(n)]

    def admin(self, timeout: float = 5.0) -> KafkaAdminClient:
        """A kafka-python admin client on the running brokers; close it (`with` does).

        It may send a request to a paused broker and wait 10 s for the reply: view() and
        the methods built on it do not.
        """
        ms = int(timeout * 1000)
        return KafkaAdminClient(
            bootstrap_servers=[self._admin_address(n) for n in self._serving()]
            or [self._admin_address(n) for n in self.members],
            client_id="devstack",
            bootstrap_timeout_ms=ms,
            request_timeout_ms=ms,
        )

    def _admin_address(self, n: int) -> str:
        return f"{self.ips[n - 1]}:{self.admin_port}"

    def view(self, n: int | None = None, timeout: float = 1.0) -> ClusterView | None:
        """The cluster's brokers and active controller as broker n sees them, or (n None)
        the first running, unpaused broker that answers; None if it does not answer."""
        if n is not None:
            self._check(n)
            return self._view(n, timeout)
        for m in self._serving():
            view = self._view(m, timeout)
            if view is not None:
                return view
        return None

    def _view(self, n: int, timeout: float) -> ClusterView | None:
        ip = self.ips[n - 1]
        cluster = ask(ip, self.admin_port, describe_cluster_request(), timeout)
        quorum = ask(ip, self.admin_port, describe_quorum_request(), timeout)
        if cluster is None or quorum is None or cluster.error_code != 0:
            return None
        brokers = {b.broker_id: b.is_fenced for b in cluster.brokers}
        # The cluster's controller_id is no help: in KRaft a broker names a random broker
        # there (clients cannot reach controllers). The quorum leader is the real one.
        # A broker forwards DescribeQuorum to the controllers; without a quorum it fails.
        leader = -1
        if quorum.error_code == 0 and quorum.topics:
            partition = quorum.topics[0].partitions[0]
            leader = partition.leader_id if partition.error_code == 0 else -1
        return ClusterView(
            cluster_id=str(cluster.cluster_id),
            unfenced=frozenset(int(b) for b, fenced in brokers.items() if not fenced),
            fenced=frozenset(int(b) for b, fenced in brokers.items() if fenced),
            controller=int(leader) if leader in self.members else None,
        )

    def active_controller(self) -> int | None:
        """The node id of the KRaft quorum leader, None while there is none (or no answer)."""
        view = self.view()
        return None if view is None else view.controller

    def ready(self) -> bool:
        """Every running broker serves and sees itself and the others running registered
        and unfenced, with one of them the active controller."""
        running = {n for n in self.members if self.member_running(n)}
        if not running or any(self.member_paused(n) for n in running):
            return False
        for n in running:
            view = self.view(n, timeout=1.0)
            if view is None or not running <= view.unfenced or view.controller not in running:
                return False
        return True

    def state(self, n: int) -> str | None:
        """As broker n sees itself: "broker" (unfenced), "fenced" or "not registered", with
        ", active controller" for the quorum leader; None if it does not answer."""
        view = self.view(n)
        if view is None:
            return None
        if n in view.unfenced:
            role = "broker"
        else:
            role = "fenced" if n in view.fenced else "not registered"
        return f"{role}, active controller" if view.controller == n else role

    def under_replicated(self, timeout: float = 1.0) -> list[str] | None:
        """Partitions ("topic/n") with fewer in-sync replicas than replicas, as the first
        running, unpaused broker that answers knows them; None if none answers."""
        for n in self._serving():
            reply = ask(self.ips[n - 1], self.admin_port, metadata_request(), timeout)
            if reply is not None:
                return sorted(
                    f"{topic.name}/{p.partition_index}"
                    for topic in reply.topics
                    for p in topic.partitions
                    if len(p.isr_nodes) < len(p.replica_nodes)
                )
        return None

    def wait_in_sync(self, timeout: float = 30.0) -> float:
        """Wait until no partition is under-replicated; returns the seconds it took.

        A broker back from a fault is unfenced (ready) before it has caught up and rejoined
        the ISRs, which a monitor would report as under-replicated partitions.
        """
        start = time.monotonic()
        while (lagging := self.under_replicated()) != []:
            if time.monotonic() - start >= timeout:
                which = "no broker answers" if lagging is None else ", ".join(lagging[:10])
                more = f" and {len(lagging) - 10} more" if lagging and len(lagging) > 10 else ""
                raise TimeoutError(
                    f"{self.title} {self.name!r} not in sync after "
                    f"{time.monotonic() - start:.0f} s: {which}{more}"
                )
            time.sleep(0.2)
        return time.monotonic() - start

    def create_topic(
        self, name: str, partitions: int = 1, replication_factor: int = 3, timeout: float = 30.0
    ) -> None:
        """Create topic `name` unless one of that name exists (whatever its partitions), and
        wait until every partition has a leader."""
        with self.admin(timeout) as admin:
            spec = {"num_partitions": partitions, "replication_factor": replication_factor}
            reply = admin.create_topics({name: spec}, raise_errors=False)
            topic = reply["topics"][0]
            if topic["error_code"] not in (0, TopicAlreadyExistsError.errno):
                raise RuntimeError(f"creating Kafka topic {name!r}: {topic['error_message']}")
            admin.wait_for_topics([name], timeout_ms=int(timeout * 1000))


def claim_sasl_kafka(
    home: Path, name: str, users: Mapping[str, str], jars: Path | None = None
) -> tuple[KafkaCluster, Slot]:
    """A 1-broker cluster (not started) that wants SASL logins as `users`, on the first IP
    of slot n of its own kind, 127.0.0.(10n+17): the IPs of the SASL ZooKeeper slots, on
    Kafka's ports."""
    return claim_cluster(
        "kafka-sasl-test",
        home,
        name,
        lambda h, nm, ips: KafkaCluster(h, nm, ips[:1], jars=jars, sasl_users=users),
        first_ip=7,
    )


def claim_kafka(home: Path, name: str, jars: Path | None = None) -> tuple[KafkaCluster, Slot]:
    """A 3-broker cluster (not started) on the IPs of the lowest free, usable "kafka-test"
    slot: slot n runs on 127.0.0.(10n+14)-(10n+16), away from a developer's playground on
    127.0.0.4-6 and from the ZooKeeper test slots. See jvm.claim_cluster."""
    return claim_cluster(
        "kafka-test", home, name, lambda h, nm, ips: KafkaCluster(h, nm, ips, jars=jars), first_ip=4
    )
