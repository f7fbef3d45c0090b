"""`replicante`: the operator's command line. Thin: it parses, calls `client.api`,
prints. Errors are one line on stderr; exit 2 for bad input, 1 for anything else."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import ValidationError

from client import render
from client.api import (
    RemediationRefusedError,
    RemediationRunningError,
    ReplicanteClient,
    UnknownClusterError,
    UnknownRemediationError,
    operator,
)
from config.settings import Settings
from models import ClusterSpec, load_spec
from models.base import MAX_REASON
from models.remediation import Decision
from models.spec import shown
from store import StoreError
from worker.process import exit_now, serve

DURATION = re.compile(r"^(\d+)([smhd])$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class UsageError(ValueError):
    """Bad input on the command line: exit code 2, nothing changed."""


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`10m`, `2h`, `1d`, or an ISO-8601 time (UTC when no offset is given).

    >>> parse_since("10m", datetime(2026, 1, 1, 12, 0, tzinfo=UTC)).isoformat()
    '2026-01-01T11:50:00+00:00'
    >>> parse_since("yesterday")
    Traceback (most recent call last):
    ...
    client.cli.UsageError: --since: 'yesterday' is neither a duration like 10m nor an ISO time
    >>> parse_since("99999999999d")
    Traceback (most recent call last):
    ...
    client.cli.UsageError: --since: '99999999999d' reaches back before the year 1
    """
    match = DURATION.match(text)
    if match:
        try:
            return (now or datetime.now(UTC)) - timedelta(seconds=int(match[1]) * UNITS[match[2]])
        except (OverflowError, ValueError):  # ValueError: more digits than int() reads
            raise UsageError(f"--since: {shown(text)} reaches back before the year 1") from None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"--since: {shown(text)} is neither a duration like 10m nor an ISO time"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def positive(text: str) -> int:
    """A count of 1 or more, for argparse.

    >>> positive("-1")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: '-1' is not a count of 1 or more
    """
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{shown(text)} is not a count of 1 or more")
    return int(text)


def reason(text: str) -> str:
    """A reason as long as events and histories take (`MAX_REASON`), for argparse."""
    if len(text) > MAX_REASON:
        raise argparse.ArgumentTypeError(
            f"{len(text)} characters, more than {MAX_REASON}: say it shorter"
        )
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="replicante", description="Watch and heal ZooKeeper, Kafka and MongoDB clusters."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    cluster = commands.add_parser("cluster", help="apply and list cluster specs")
    cluster_commands = cluster.add_subparsers(dest="cluster_command", required=True)
    apply = cluster_commands.add_parser("apply", help="start watching a cluster or update its spec")
    apply.add_argument("-f", "--file", required=True, help="cluster spec (YAML)")
    listing = cluster_commands.add_parser("ls", help="list watched clusters")
    listing.add_argument("--unhealthy", action="store_true", help="only clusters not healthy")
    listing.add_argument("--json", action="store_true")

    status = commands.add_parser("status", help="nodes, roles, health and findings of a cluster")
    status.add_argument("cluster")
    status.add_argument("--json", action="store_true")

    events = commands.add_parser("events", help="what happened to a cluster")
    events.add_argument("cluster", nargs="?", help="default: every cluster")
    events.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="keep printing new events (from the Kafka topic when a stream is configured)",
    )
    events.add_argument("--since", help="10m, 2h, 1d or an ISO time (default: all)")
    events.add_argument("--limit", type=positive, default=200, help="at most this many (1 or more)")
    events.add_argument("--json", action="store_true", help="one JSON event per line")

    for name, what in (
        ("pause", "stop watching a cluster (maintenance), or a remediation before its next step"),
        ("resume", "watch a cluster again, or let a paused remediation go on"),
    ):
        control = commands.add_parser(name, help=what)
        control.add_argument(
            "target", metavar="CLUSTER|ID", help="a cluster, or a remediation's id (remediate/...)"
        )
        control.add_argument(
            "--reason",
            type=reason,
            default="",
            help="why; kept in the cluster's event or the remediation's history",
        )

    remediate = commands.add_parser("remediate", help="start a remediation by hand")
    remediate.add_argument("cluster")
    remediate.add_argument("playbook", help="e.g. restart_dead_member (see README)")
    remediate.add_argument("--node", metavar="NODE_ID", help="the node the playbook acts on")
    remediate.add_argument(
        "--dry-run", action="store_true", help="record the plan and the safety verdict, stop"
    )
    remediate.add_argument(
        "--auto", action="store_true", help="act without waiting for `replicante approve`"
    )

    actions = commands.add_parser("actions", help="remediations: list, show")
    actions_commands = actions.add_subparsers(dest="actions_command", required=True)
    actions_commands.add_parser("ls", help="running, then recently finished").add_argument(
        "cluster", nargs="?", help="default: every cluster"
    )
    actions_commands.add_parser("show", help="steps, verdict, who decided").add_argument("id")
    for sub in actions_commands.choices.values():
        sub.add_argument("--json", action="store_true")

    for name, what in (
        ("approve", "let a remediation waiting for approval act"),
        ("reject", "end a remediation waiting for approval without acting"),
        ("abort", "stop a running remediation (between steps or inside one)"),
    ):
        decide = commands.add_parser(name, help=what)
        decide.add_argument("id")
        decide.add_argument(
            "--reason", required=name != "abort", default="", help="recorded in the event"
        )
        decide.add_argument("--by", default=None, help="default: $USER@host")

    doctor = commands.add_parser(
        "doctor", help="check Temporal, workers, agents, store, event stream and every cluster"
    )
    doctor.add_argument("--json", action="store_true", help="one JSON object")

    commands.add_parser("worker", help="run the core worker (workflows and probes)")
    agent = commands.add_parser("agent", help="run a node agent (service actions of one node)")
    agent.add_argument(
        "--node", required=True, metavar="AGENT_ID", help="its node's id, or the spec's `agent:`"
    )
    agent.add_argument("--config", type=Path, help="default: $REPLICANTE_HOME/agents/AGENT_ID.yaml")

    codec = commands.add_parser(
        "codec-server",
        help="decrypt payloads for the Temporal UI and CLI (for holders of a token)",
        description="Serves POST /encode and /decode with REPLICANTE_CODEC_KEYS or"
        " REPLICANTE_CODEC_KEY to callers sending Authorization: Bearer TOKEN, a token of"
        " REPLICANTE_CODEC_SERVER_TOKENS (a file, or a comma list), and to browsers that"
        " opened GET /login?token=TOKEN (a cookie; GET /logout clears it).",
    )
    codec.add_argument("--listen", default="127.0.0.1:8081", metavar="HOST:PORT")
    codec.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="URL",
        help="a web page origin that may call it (CORS), e.g. the UI's http://127.0.0.1:8233",
    )
    return parser


async def run(args: argparse.Namespace, settings: Settings) -> int:
    # `doctor`, `codec-server` and `events --follow` import what they
    # run when they run: their workflows, datastore clients and kafka-python would otherwise
    # load with every command, the node agent's among them (tests/test_imports.py checks
    # that they do not).
    if args.command == "doctor":
        from client import doctor

        return await doctor.run(settings, as_json=args.json)
    if args.command == "codec-server":
        from client import codec_server

        server = codec_server.codec_server(
            settings, settings.codec_server_tokens, args.listen, args.allow_origin
        )
        print(f"codec server on {server.url} (Ctrl-C stops)", flush=True)
        await codec_server.serve(server)
        return 0
    # Validate local input before connecting anywhere: bad input changes nothing.
    spec = (
        load_spec(args.file)
        if args.command == "cluster" and args.cluster_command == "apply"
        else None
    )
    since = parse_since(args.since) if getattr(args, "since", None) else None
    decision = (
        parse_decision(args.by, args.reason)
        if args.command in ("approve", "reject", "abort")
        else None
    )
    api = await ReplicanteClient.connect(settings)
    try:
        if decision is not None:
            await decide(api, args.command, args.id, decision)
        elif args.command in ("remediate", "actions") or names_remediation(args):
            await remediation_command(api, args)
        else:
            await command(api, args, spec, since)
    finally:
        api.close()
    return 0


async def command(
    api: ReplicanteClient,
    args: argparse.Namespace,
    spec: ClusterSpec | None,
    since: datetime | None,
) -> None:
    if spec is not None:
        result = await api.apply(spec)
        generation = f"spec generation {result.spec_generation}"
        if not result.changed:
            print(f"cluster {result.cluster_id} unchanged ({generation} is this spec)")
        else:
            verb = "watching" if result.created else "updated"
            print(f"{verb} cluster {result.cluster_id} ({generation})")
    elif args.command == "cluster":
        found = await api.clusters(unhealthy=args.unhealthy)
        if args.json:
            print(json.dumps([c.__dict__ for c in found], default=str))
        else:
            print(render.clusters(found))
    elif args.command == "status":
        st = await api.status(args.cluster)
        print(st.model_dump_json(indent=2) if args.json else render.status(st))
    elif args.command == "events":
        stored = await api.events(args.cluster, since, args.limit)
        if not stored and args.cluster is not None:
            await api.status(args.cluster)  # raises if the cluster is unknown
        if args.follow:
            await follow(api, args, since)
        elif args.json:
            for s in stored:
                print(s.event.model_dump_json())
        else:
            print(render.events(stored))
    elif args.command in ("pause", "resume"):
        action: Callable[[str, str], Awaitable[None]] = getattr(api, args.command)
        await action(args.target, args.reason)
        print(f"{'paused' if args.command == 'pause' else 'resumed'} {args.target}")


def names_remediation(args: argparse.Namespace) -> bool:
    """`pause` or `resume` of a remediation rather than of a cluster's monitor: every
    remediation id starts with `remediate/`, and no cluster id has a `/`."""
    return args.command in ("pause", "resume") and args.target.startswith("remediate/")


def parse_decision(by: str | None, reason: str) -> Decision:
    """`--by` (default `$USER@host`) and `--reason`, checked before anything is asked."""
    try:
        return Decision(by=operator() if by is None else by, reason=reason)
    except ValidationError as error:
        first = error.errors()[0]
        raise UsageError(f"--{first['loc'][0]}: {first['msg'].lower()}") from None


async def decide(api: ReplicanteClient, what: str, remediation_id: str, decision: Decision) -> None:
    if what == "abort":
        await api.abort(remediation_id, decision)
        print(f"abort asked of {remediation_id} by {decision.by}")
    else:
        decided = api.approve if what == "approve" else api.reject
        print(f"{remediation_id}: {await decided(remediation_id, decision)}")


async def remediation_command(api: ReplicanteClient, args: argparse.Namespace) -> None:
    if args.command == "remediate":
        print(
            await api.remediate(
                args.cluster, args.playbook, args.node, dry_run=args.dry_run, auto=args.auto
            )
        )
    elif args.command == "pause":
        await api.pause_remediation(args.target, args.reason)
        print(f"paused {args.target}: no step starts until it is resumed (one running finishes)")
    elif args.command == "resume":
        await api.resume_remediation(args.target, args.reason)
        print(f"resumed {args.target}")
    elif args.actions_command == "ls":
        found = await api.actions(args.cluster)
        if not found and args.cluster is not None:
            await api.status(args.cluster)  # raises if the cluster is unknown
        if args.json:
            print(json.dumps([a.__dict__ for a in found], default=str))
        else:
            print(render.actions(found))
    else:
        st = await api.action(args.id)
        if args.json:
            print(st.model_dump_json(indent=2))
        else:
            print(render.action(st))


async def follow(api: ReplicanteClient, args: argparse.Namespace, since: datetime | None) -> None:
    """Print events as they come until interrupted; a reader that goes away ends it."""
    from client.follow import from_store, from_topic

    stream = api.settings.stream
    batches = (
        from_topic(stream, args.cluster, since)
        if stream is not None
        else from_store(api.store, args.cluster, since)
    )
    where = f"topic {stream.topic}" if stream is not None else "the store"
    # The first batch comes once the source is open: from then on nothing is missed.
    batch = await asyncio.to_thread(next, batches)
    print(f"following {args.cluster or 'every cluster'} on {where} (Ctrl-C stops)", flush=True)
    while True:
        for event in batch:
            print(event.model_dump_json() if args.json else render.event_line(event), flush=True)
        batch = await asyncio.to_thread(next, batches)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "worker":
        from worker.core import run_core_worker

        return serve(run_core_worker)
    if args.command == "agent":
        from worker.agent import run_agent

        return serve(lambda settings: run_agent(settings, args.node, args.config))
    return serve(
        lambda settings: run(args, settings),
        bad_input=(UsageError, RemediationRefusedError),
        refusals=(
            UnknownClusterError,
            UnknownRemediationError,
            RemediationRunningError,
            StoreError,
        ),
    )


def entrypoint() -> None:
    """The console script; see worker/process.py for why it exits the way it does."""
    exit_now(main())
