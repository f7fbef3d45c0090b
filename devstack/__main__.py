"""`python -m devstack` (or scripts/stack): start, break and stop the local servers by hand.

temporal start|stop|status
zookeeper start|stop|status|kill N|restart N|pause N|resume N [--name playground]
"""

from __future__ import annotations

import argparse
import sys

from devstack.home import state_home
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


def zookeeper(args: argparse.Namespace) -> None:
    zk = ZooKeeperEnsemble(state_home(), args.name)
    label = f"zookeeper {args.name}"
    if args.action in MEMBER_ACTIONS:
        if args.member is None:
            raise SystemExit(f"zookeeper {args.action} needs a member number (1..{len(zk.ips)})")
        n = args.member
        if args.action == "kill":
            pid = zk.member_pid(n)
            zk.kill_member(n)
            print(f"{label} {n}: " + ("not running" if pid is None else f"killed pid {pid}"))
        elif args.action == "restart":
            zk.stop_member(n)
            zk.start_member(n)
            zk.wait_ready()
            print(f"{label} {n}: restarted, {zk.describe(n)}")
        elif args.action == "pause":
            zk.pause_member(n)
            print(f"{label} {n}: {zk.describe(n)}")
        else:
            zk.resume_member(n)
            print(f"{label} {n}: {zk.describe(n)}")
    elif args.action == "start":
        zk.start()
        took = zk.wait_ready()
        print(f"{label}: ready in {took:.1f} s, leader {zk.leader()}, at {zk.connect_string}")
    elif args.action == "stop":
        zk.stop()
        print(f"{label}: stopped")
    else:
        for n, address in zip(zk.members, zk.addresses, strict=True):
            print(f"{label} {n} {address}: {zk.describe(n)}")


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

    z = services.add_parser("zookeeper", help="3-member ZooKeeper ensemble on 127.0.0.1-3")
    z.add_argument("action", choices=("start", "stop", "status", *MEMBER_ACTIONS))
    z.add_argument("member", type=int, nargs="?", help="member number, for kill|restart|...")
    z.add_argument("--name", default="playground")
    z.set_defaults(run=zookeeper)

    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (OSError, RuntimeError, TimeoutError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from e


if __name__ == "__main__":
    main()
