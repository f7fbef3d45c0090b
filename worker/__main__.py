"""`python -m worker`: run the core worker (same as `replicante worker`), or with
`--agent NODE_ID [--config FILE]` the node agent of one node (`replicante agent`)."""

import argparse

from client.cli import main
from client.script import exit_now

parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__)
parser.add_argument("--agent", metavar="NODE_ID", help="run this node's agent instead")
parser.add_argument("--config", help="the agent's config (default: see `replicante agent -h`)")
args = parser.parse_args()
# The CLI's own paths: the same one-line errors and exit codes (2 for a bad config), and
# each imports only what it runs.
config = ["--config", args.config] if args.config else []
exit_now(main(["agent", "--node", args.agent, *config] if args.agent is not None else ["worker"]))
