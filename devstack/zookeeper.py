"""A ZooKeeper ensemble of real JVMs, one member per loopback IP so all use the usual ports."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from pathlib import Path

from devstack.jvm import JvmCluster, claim_cluster
from devstack.slots import Slot

SERVER_CLASS = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
FOUR_LETTER_WORDS = "srvr,mntr,conf,ruok,stat,cons,envi"

# Logs go to stdout, which the member's log file captures along with JVM crash output.
LOGBACK_XML = """\
<configuration>
  <appender name="out" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%d{ISO8601} %-5level [%thread] %logger{36} - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="out"/></root>
</configuration>
"""


def srvr(host: str, port: int, timeout: float = 1.0) -> dict[str, str] | None:
    """The member's `srvr` reply as a dict ("Mode" -> "leader"), None if it does not answer.

    A member outside a quorum replies without a Mode; a SIGSTOPped one accepts the connection
    (the kernel does that) but never replies, hence the timeout.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"srvr")
            chunks: list[bytes] = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
    except OSError:
        return None
    reply: dict[str, str] = {}
    for line in b"".join(chunks).decode(errors="replace").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            reply[key.strip()] = value.strip()
    return reply


class ZooKeeperEnsemble(JvmCluster):
    """Members are numbered 1..N; member n runs on ips[n-1] in <home>/zookeeper/<name>/<n>/.

    With `sasl_users` (user -> password) every member requires clients to log in with SASL
    DIGEST-MD5 as one of them (`enforce.auth`, ZooKeeper 3.7+): a session that has not is
    closed at its first request. The four-letter words answer anyone, as ZooKeeper's do.
    """

    service = "zookeeper"
    product = "ZooKeeper"
    title = "ZooKeeper ensemble"
    main_class = SERVER_CLASS
    config_name = "zoo.cfg"
    jar_glob = "zookeeper-*.jar"

    def __init__(
        self,
        home: Path,
        name: str,
        ips: tuple[str, ...] = ("127.0.0.1", "127.0.0.2", "127.0.0.3"),
        client_port: int = 2181,
        peer_port: int = 2888,
        election_port: int = 3888,
        tick_ms: int = 500,
        heap_mb: int = 128,
        jars: Path | None = None,
        java: str | None = None,
        sasl_users: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(home, name, ips, heap_mb, jars, java)
        self.sasl_users = dict(sasl_users or {})
        self.client_port = client_port
        self.peer_port = peer_port
        self.election_port = election_port
        self.tick_ms = tick_ms

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.client_port, self.peer_port, self.election_port)

    @property
    def connect_string(self) -> str:
        """All members, comma-separated, as kazoo's `hosts` wants them."""
        return ",".join(self.addresses)

    def _jvm_options(self, n: int) -> list[str]:
        options = [f"-Dlogback.configurationFile={self.member_dir(n) / 'logback.xml'}"]
        if self.sasl_users:
            options.append(f"-Djava.security.auth.login.config={self._jaas(n)}")
        return options

    def _jaas(self, n: int) -> Path:
        return self.member_dir(n) / "jaas.conf"

    def _write_jaas(self, n: int) -> list[str]:
        """The JAAS file of the users, readable by its owner alone; the config lines that
        make the member require their logins."""
        users = "".join(f'\n  user_{user}="{secret}"' for user, secret in self.sasl_users.items())
        jaas = self._jaas(n)
        jaas.touch(mode=0o600)
        module = "org.apache.zookeeper.server.auth.DigestLoginModule"
        # The module's options end with its `;`.
        jaas.write_text(f"Server {{\n  {module} required{users};\n}};\n")
        return [
            "authProvider.sasl=org.apache.zookeeper.server.auth.SASLAuthenticationProvider",
            "enforce.auth.enabled=true",
            "enforce.auth.schemes=sasl",
        ]

    def _write_files(self, n: int) -> None:
        member = self.member_dir(n)
        (member / "data").mkdir(parents=True, exist_ok=True)
        (member / "data" / "myid").write_text(f"{n}\n")
        (member / "logback.xml").write_text(LOGBACK_XML)
        lines = [
            f"tickTime={self.tick_ms}",
            # Followers get 10 ticks to sync on joining and may lag 5 ticks behind after:
            # with 500 ms ticks a member's death or pause is noticed within seconds.
            "initLimit=10",
            "syncLimit=5",
            f"dataDir={member / 'data'}",
            f"clientPort={self.client_port}",
            f"clientPortAddress={self.ips[n - 1]}",
            f"4lw.commands.whitelist={FOUR_LETTER_WORDS}",
            # The AdminServer would bind 8080 on all addresses, once per member.
            "admin.enableServer=false",
            # Every client here comes from one loopback address: a fleet of specs over one
            # ensemble (bench/fleet.py, the suite's) holds more than the default 60 each.
            "maxClientCnxns=0",
        ]
        if self.sasl_users:
            lines += self._write_jaas(n)
        lines += [
            f"server.{m}={ip}:{self.peer_port}:{self.election_port}"
            for m, ip in zip(self.members, self.ips, strict=True)
        ]
        self._config(n).write_text("\n".join(lines) + "\n")

    # --- quorum ----------------------------------------------------------------------------

    def srvr(self, n: int, timeout: float = 1.0) -> dict[str, str] | None:
        self._check(n)
        return srvr(self.ips[n - 1], self.client_port, timeout)

    def mode(self, n: int, timeout: float = 1.0) -> str | None:
        """ "leader", "follower", "standalone", or None when the member does not serve."""
        reply = self.srvr(n, timeout)
        return None if reply is None else reply.get("Mode")

    def leader(self) -> int | None:
        leaders = [n for n in self.members if self.member_running(n) and self.mode(n) == "leader"]
        return leaders[0] if len(leaders) == 1 else None

    def ready(self) -> bool:
        """Every running member serves, and exactly one of them leads."""
        running = [n for n in self.members if self.member_running(n)]
        modes = [self.mode(n) for n in running]
        if len(self.ips) == 1:
            return modes == ["standalone"]
        ok = bool(running) and all(m in ("leader", "follower") for m in modes)
        return ok and modes.count("leader") == 1

    def state(self, n: int) -> str | None:
        return self.mode(n)


def claim_ensemble(
    home: Path, name: str, kind: str = "zk-test", jars: Path | None = None
) -> tuple[ZooKeeperEnsemble, Slot]:
    """A 3-member ensemble (not started) on the IPs of the lowest free, usable slot of `kind`:
    slot n runs on 127.0.0.(10n+11)-(10n+13), away from a developer's playground on
    127.0.0.1-3. See jvm.claim_cluster."""
    return claim_cluster(
        kind, home, name, lambda h, nm, ips: ZooKeeperEnsemble(h, nm, ips, jars=jars), first_ip=1
    )


def claim_sasl_ensemble(
    home: Path, name: str, users: Mapping[str, str], jars: Path | None = None
) -> tuple[ZooKeeperEnsemble, Slot]:
    """A 3-member ensemble (not started) requiring SASL logins as `users`, on slot n of its
    own kind, 127.0.0.(10n+17)-(10n+19): never the addresses of a plain ensemble, so a
    test that means one can never reach the other."""
    return claim_cluster(
        "zk-sasl-test",
        home,
        name,
        lambda h, nm, ips: ZooKeeperEnsemble(h, nm, ips, jars=jars, sasl_users=users),
        first_ip=7,
    )
