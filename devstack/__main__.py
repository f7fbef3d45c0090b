"""`python -m devstack` (or scripts/stack): the local stack, and its servers by hand.

up [--engine production]|down
                        the whole playground: Temporal, ZooKeeper, Kafka, worker, agents
                        (--engine production: the real Temporal server on PostgreSQL
                        instead of the dev server)
temporal start|stop|status
engine up|down|status   the real Temporal server on PostgreSQL 15 (devstack/engine.py)
zookeeper start|stop|status [N]|pid N|kill N|restart N|pause N|resume N [--name playground]
kafka start|stop|status [N]|pid N|kill N|restart N|pause N|resume N [--name playground]

With a member number N, start/stop/status act on that member alone (what the playground's
node agents run); `status N` exits 0 only while member N runs (and is not paused); `pid N`
prints its JVM's pid, or exits 3 when it does not run (the agents' `instance`).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable

from devstack.engine import ProductionEngine
from devstack.home import state_home
from devstack.jvm import JvmCluster
from devstack.kafka import KafkaCluster
from devstack.temporal import TemporalDevServer
from devstack.zookeeper import ZooKeeperEnsemble

MEMBER_ACTIONS = ("kill", "restart", "pause", "resume")


def temporal(args: argparse.Namespace) -> None:
    server = TemporalDevServer(state_home(), ip=args.ip, port=args.port, ui_port=args.ui_port)
    where = f"{server.address} (ui {server.ui_url}, log {server.log_file})"
    if args.action == "start":
        was_running = server.running()
        server.start()
        verb = "already running" if was_running else "started"
        print(f"temporal: {verb} at {where}, pid {server.pid()}")
    elif args.action == "stop":
        pid = server.pid()
        server.stop()
        print("temporal: not running" if pid is None else f"temporal: stopped pid {pid}")
    else:
        pid = server.pid()
        print("temporal: stopped" if pid is None else f"temporal: running at {where}, pid {pid}")


def engine(args: argparse.Namespace) -> None:
    production = ProductionEngine(state_home(), ip=args.ip, port=args.port)
    if args.action == "up":
        started = time.monotonic()
        production.up()
        print(f"engine: up in {time.monotonic() - started:.1f} s, at {production.address}")
    elif args.action == "down":
        production.down()
        print("engine: stopped (its workflows stay in PostgreSQL)")
    for line in production.status():
        print(f"engine: {line}")


def zookeeper(args: argparse.Namespace) -> None:
    home = state_home()
    zk = (
        ZooKeeperEnsemble(home, args.name, args.ips)
        if args.ips
        else ZooKeeperEnsemble(home, args.name)
    )
    members(zk, args, lambda: f"leader {zk.leader()}")


def kafka(args: argparse.Namespace) -> None:
    home = state_home()
    cluster = KafkaCluster(home, args.name, args.ips) if args.ips else KafkaCluster(home, args.name)
    members(cluster, args, lambda: f"active controller {cluster.active_controller()}")


def members(cluster: JvmCluster, args: argparse.Namespace, leader: Callable[[], str]) -> None:
    """The actions on a whole cluster or one of its members; `leader` names who leads."""
    label = f"{cluster.service} {args.name}"
    if args.action in (*MEMBER_ACTIONS, "pid") and args.member is None:
        raise SystemExit(
            f"{cluster.service} {args.action} needs a {cluster.noun} number (1..{len(cluster.ips)})"
        )
    if args.action in MEMBER_ACTIONS:
        n = args.member
        if args.action == "kill":
            pid = cluster.member_pid(n)
            cluster.kill_member(n)
            print(f"{label} {n}: " + ("not running" if pid is None else f"killed pid {pid}"))
        elif args.action == "restart":
            cluster.stop_member(n)
            cluster.start_member(n)
            cluster.wait_ready(timeout=60)
            print(f"{label} {n}: restarted, {cluster.describe(n)}")
        elif args.action == "pause":
            cluster.pause_member(n)
            print(f"{label} {n}: {cluster.describe(n)}")
        else:
            cluster.resume_member(n)
            print(f"{label} {n}: {cluster.describe(n)}")
    elif args.member is not None:
        member(cluster, args.action, args.member, label)
    elif args.action == "start":
        cluster.start()
        took = cluster.wait_ready(timeout=60)
        print(f"{label}: ready in {took:.1f} s, {leader()}, at {','.join(cluster.addresses)}")
    elif args.action == "stop":
        cluster.stop()
        print(f"{label}: stopped")
    else:
        for n, address in zip(cluster.members, cluster.addresses, strict=True):
            print(f"{label} {n} {address}: {cluster.describe(n)}")


def member(cluster: JvmCluster, action: str, n: int, label: str) -> None:
    """start N, stop N, status N, pid N: one member, not interactive, the exit code tells."""
    if action == "start":
        cluster.start_member(n)
        cluster.wait_ready(timeout=60)
        print(f"{label} {n}: started, {cluster.describe(n)}")
    elif action == "stop":
        cluster.stop_member(n)
        print(f"{label} {n}: stopped")
    elif action == "pid":
        pid = cluster.member_pid(n)
        if pid is None:
            raise SystemExit(3)
        print(pid)
    else:
        print(f"{label} {n}: {cluster.describe(n)}")
        if not cluster.member_running(n) or cluster.member_paused(n):
            raise SystemExit(1)


def add_members_parser(
    services: argparse._SubParsersAction[argparse.ArgumentParser],
    service: str,
    description: str,
    run: Callable[[argparse.Namespace], None],
) -> None:
    parser = services.add_parser(service, help=description)
    parser.add_argument("action", choices=("start", "stop", "status", "pid", *MEMBER_ACTIONS))
    parser.add_argument("member", type=int, nargs="?", help="member number, for kill|restart|...")
    parser.add_argument("--name", default="playground")
    parser.add_argument(
        "--ips",
        type=lambda text: tuple(text.split(",")),
        help="the members' IPs, comma-separated, for a cluster not on the playground's (a test's)",
    )
    parser.set_defaults(run=run)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m devstack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    services = parser.add_subparsers(dest="service", required=True)

    t = services.add_parser("temporal", help="Temporal dev server")
    t.add_argument("action", choices=("start", "stop", "status"))
    t.add_argument("--ip", default="127.0.0.1")
    t.add_argument("--port", type=int, default=7233)
    t.add_argument("--ui-port", type=int, default=8233)
    t.set_defaults(run=temporal)

    e = services.add_parser("engine", help="the real Temporal server on PostgreSQL 15")
    e.add_argument("action", choices=("up", "down", "status"))
    e.add_argument("--ip", default="127.0.0.1")
    e.add_argument("--port", type=int, default=7233, help="the frontend's; the others follow")
    e.set_defaults(run=engine)

    add_members_parser(
        services, "zookeeper", "3-member ZooKeeper ensemble on 127.0.0.1-3", zookeeper
    )
    add_members_parser(services, "kafka", "3-broker Kafka cluster (KRaft) on 127.0.0.4-6", kafka)
    up = services.add_parser(
        "up", help="start everything and watch the playground clusters (scripts/dev-up)"
    )
    up.add_argument(
        "--engine",
        choices=("dev", "production"),
        default="dev",
        help="Temporal: the dev server (SQLite, with its UI), or the real server on PostgreSQL",
    )
    up.set_defaults(run=None)
    services.add_parser("down", help="stop everything up started").set_defaults(run=None)

    args = parser.parse_args(argv)
    if args.run is None:
        # Imported here: the playground loads the client and the Temporal SDK, which the
        # node agents' frequent `zookeeper status N` need not wait for. It talks to Temporal,
        # so it exits as the CLI does.
        from devstack import playground
        from worker.process import exit_now, serve

        if args.service == "up":
            start = functools.partial(playground.up, engine=args.engine)
            exit_now(serve(start, refusals=(playground.AddressTaken,)))
        exit_now(serve(playground.down))
    try:
        args.run(args)
    except (OSError, RuntimeError, TimeoutError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from e


if __name__ == "__main__":
    main()
