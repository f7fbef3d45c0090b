"""`python -m worker`: run the core worker (same as `replicante worker`), or with
`--agent NODE_ID [--config FILE]` the node agent of one node (`replicante agent`)."""

import argparse
import logging

from client.cli import main
from client.script import exit_now, run_script
from worker.core import run_core_worker
from worker.settings import Settings

parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__)
parser.add_argument("--agent", metavar="NODE_ID", help="run this node's agent instead")
parser.add_argument("--config", help="the agent's config (default: see `replicante agent -h`)")
args = parser.parse_args()
if args.agent is not None:
    # The CLI's own path: the same one-line errors and exit codes (2 for a bad config).
    config = ["--config", args.config] if args.config else []
    exit_now(main(["agent", "--node", args.agent, *config]))
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
run_script(run_core_worker(Settings.from_env()))
