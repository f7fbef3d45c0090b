"""Asking servers: a client pinned to each (`pinned_client`), the commands the probe sends
(`read_server`), the spec's login (`login_of`) and how a failure reads in
`NodeStatus.error` (`describe_error`)."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pymongo
from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError
from pymongo.server_type import SERVER_TYPE

from activities.mongodb.links import LinkWatch
from activities.mongodb.replies import MAX_ERROR, ROUTER_MSG, Reading, Reply, _doc, _error_text
from config.mongodb import MongoDBLogin
from config.secrets import read_secrets, readable
from models import AuthMechanism, ClusterSpec, Role

COMMAND_NOT_FOUND = 59
AUTH_FAILED = 18
"""The server's AuthenticationFailed code."""


# serverStatus answers ~40 sections by default, some of them large (wiredTiger, metrics,
# locks); the probe reads the top-level uptime, `connections` and, on a mongos, `sharding`.
# A section a server does not know is ignored, and sections newer than this list still come.
# fmt: off
SERVER_STATUS_OFF = (
    "asserts", "batchedDeletes", "catalogStats", "collectionCatalog", "electionMetrics",
    "extra_info", "flowControl", "globalLock", "indexBuilds", "indexBulkBuilder", "indexStats",
    "locks", "logicalSessionRecordCache", "metrics", "network", "opLatencies",
    "opReadConcernCounters", "opWriteConcernCounters", "opcounters", "opcountersRepl",
    "oplogTruncation", "planCache", "queryAnalyzers", "querySettings", "queues",
    "readConcernCounters", "readPreferenceCounters", "repl", "scramCache", "security",
    "shardingStatistics", "storageEngine", "tcmalloc", "tenantMigrations", "trafficRecording",
    "transactions", "transportSecurity", "twoPhaseCommitCoordinator", "wiredTiger",
)
# fmt: on
SERVER_STATUS: dict[str, int] = {"serverStatus": 1} | dict.fromkeys(SERVER_STATUS_OFF, 0)
MONGOD_COMMANDS: dict[str, dict[str, int]] = {
    "buildInfo": {"buildInfo": 1},
    "replSetGetStatus": {"replSetGetStatus": 1},
    "replSetGetConfig": {"replSetGetConfig": 1},
    "serverStatus": SERVER_STATUS,
}
ROUTER_COMMANDS: dict[str, dict[str, int]] = {
    "buildInfo": {"buildInfo": 1},
    "serverStatus": SERVER_STATUS,
    "listShards": {"listShards": 1},
    "getShardMap": {"getShardMap": 1},
    "balancerStatus": {"balancerStatus": 1},
}


# A probe-only client asks once per probe: its own heartbeats would only add load.
PROBE_HEARTBEAT_MS = 60_000
# How pymongo's ProtocolError messages start: what answered is not speaking MongoDB.
PROTOCOL_ERRORS = ("Got response id", "Message length", "Unsupported OP_", "Truncated")


def describe_error(error: PyMongoError, timeout: float) -> str:
    """One line saying why a server could not be read; never a credential (pymongo's
    messages carry none: the client is built from an address and separate credentials)."""
    if isinstance(error, OperationFailure):
        if error.code == AUTH_FAILED:
            return "authentication failed"
        return _error_text(_doc(error.details) or {"code": error.code, "errmsg": str(error)})
    # pymongo leads with `host:port: cause`, then appends its timeouts and the topology.
    cause = str(error).split(" (configured timeouts", 1)[0].split(", Timeout:", 1)[0].strip()
    address, colon, rest = cause.partition(": ")
    if colon and ":" in address and " " not in address:
        cause = rest.strip()
    if "Connection refused" in cause:
        return "connection refused"
    if "timed out" in cause or (error.timeout and cause.startswith("No servers found")):
        return f"timeout after {timeout}s"
    if any(marker in cause for marker in PROTOCOL_ERRORS):
        return f"not a MongoDB reply: {cause}"[:MAX_ERROR]
    # An OS error (`[Errno -2] Name or service not known`) reads as its reason alone.
    cause = re.sub(r"^\[Errno -?\d+\] (\w)", lambda m: m.group(1).lower(), cause)
    return cause.splitlines()[0][:MAX_ERROR] if cause else type(error).__name__


def ask_hello(client: MongoClient[dict[str, Any]]) -> dict[str, Any]:
    """`hello`, or `isMaster` from a server older than 4.4.2 that lacks it."""
    try:
        return client.admin.command("hello")
    except OperationFailure as error:
        if error.code != COMMAND_NOT_FOUND:
            raise
        return client.admin.command("isMaster")


def _ask(client: MongoClient[dict[str, Any]], command: Mapping[str, int]) -> Reply:
    """The command's reply; a refusal (not authorized, not a replica set member, ...) is a
    reply too, kept for the parser. Network errors and timeouts propagate."""
    try:
        return client.admin.command(dict(command))
    except OperationFailure as error:
        return _doc(error.details) or {"ok": 0, "code": error.code, "errmsg": str(error)}


def _known_failure(client: MongoClient[dict[str, Any]]) -> Exception | None:
    """Why the client's own monitor last failed to reach its server, if the server has not
    answered since. A held link's monitor hears of a crash at once; asking again would only
    wait out the server selection timeout for the same answer."""
    for server in client.topology_description.server_descriptions().values():
        if server.error is not None and not server.is_server_type_known:
            return server.error
    return None


def read_server(client: MongoClient[dict[str, Any]], address: str, timeout: float) -> Reading:
    """Ask one server every command the probe needs, all within `timeout`. Blocking."""
    known = _known_failure(client)
    if isinstance(known, PyMongoError):
        return Reading(address, error=describe_error(known, timeout))
    try:
        with pymongo.timeout(timeout):
            started = time.perf_counter()
            hello = ask_hello(client)
            latency_ms = round((time.perf_counter() - started) * 1000, 3)
            commands = ROUTER_COMMANDS if hello.get("msg") == ROUTER_MSG else MONGOD_COMMANDS
            replies = {"hello": hello} | {
                name: _ask(client, command) for name, command in commands.items()
            }
    except PyMongoError as error:
        refused = isinstance(error, OperationFailure) and error.code == AUTH_FAILED
        return Reading(
            address,
            error=describe_error(error, timeout),
            refused_as=_role_without_login(address, timeout) if refused else None,
        )
    return Reading(address, replies, latency_ms=latency_ms)


MONITORED_ROLES = {
    SERVER_TYPE.RSPrimary: Role.PRIMARY,
    SERVER_TYPE.RSSecondary: Role.SECONDARY,
    SERVER_TYPE.RSArbiter: Role.ARBITER,
    SERVER_TYPE.Mongos: Role.ROUTER,
    SERVER_TYPE.Standalone: Role.STANDALONE,
}


def _role_without_login(address: str, timeout: float) -> Role:
    """The role a server gives anyone: `hello` needs no login. Asked only of a server that
    refused ours, on a client of its own (the refusing one has marked the server unknown)."""
    client = pinned_client(address, timeout, MongoDBLogin(), heartbeat_ms=60_000)
    try:
        with pymongo.timeout(timeout):
            ask_hello(client)
        described = client.topology_description.server_descriptions().values()
        return next(
            (MONITORED_ROLES.get(d.server_type, Role.UNKNOWN) for d in described), Role.UNKNOWN
        )
    except PyMongoError:
        return Role.UNKNOWN
    finally:
        client.close()


def login_of(spec: ClusterSpec) -> MongoDBLogin:
    """TLS and login as the spec says, its secrets read now; raises SecretUnavailable.

    >>> from models import parse_spec
    >>> login_of(parse_spec({"cluster_id": "m", "kind": "mongodb",
    ...     "nodes": [{"node_id": "m1", "address": "db1:27017"}],
    ...     "tls": {}})).client_options()["tls"]
    True
    """
    login = MongoDBLogin()
    if spec.tls is not None:
        ca_file = cert_file = None
        if spec.tls.ca_file is not None:
            ca_file = readable(spec.tls.ca_file, "tls.ca_file")
        if spec.tls.client_cert is not None:
            name = spec.tls.client_cert
            file = spec.secrets[name].file  # the spec holds it to be a file reference
            assert file is not None
            cert_file = readable(file, f"secret {name!r}")
        login = MongoDBLogin(tls=True, ca_file=ca_file, cert_file=cert_file)
    mechanism = spec.auth.mechanism if spec.auth is not None else None
    if mechanism is AuthMechanism.MONGODB_X509:
        # The server takes the user from the certificate's subject.
        return replace(login, mechanism=mechanism.value)
    credentials = read_secrets(spec, "username", "password")
    if "username" in credentials:
        login = replace(
            login,
            username=credentials["username"],
            password=credentials.get("password", ""),
            mechanism=mechanism.value if mechanism is not None else None,
        )
    return login


def pinned_client(
    address: str,
    timeout: float,
    login: MongoDBLogin,
    heartbeat_ms: int,
    listener: LinkWatch | None = None,
) -> MongoClient[dict[str, Any]]:
    """A client pinned to one server: a replica set client would follow the primary and
    hide the very member it is meant to read."""
    ms = max(int(timeout * 1000), 1)
    return MongoClient(
        address,
        directConnection=True,
        appname="replicante",
        serverSelectionTimeoutMS=ms,
        connectTimeoutMS=ms,
        socketTimeoutMS=ms,
        heartbeatFrequencyMS=heartbeat_ms,
        retryReads=False,
        retryWrites=False,
        event_listeners=[listener] if listener is not None else [],
        **login.client_options(),
    )
