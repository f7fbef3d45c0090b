"""`python -m worker`: run the core worker (same as `replicante worker`), or with
`--agent AGENT_ID [--config FILE]` the node agent of one node (`replicante agent`)."""

import argparse
from pathlib import Path

from worker.process import exit_now, serve

parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__)
parser.add_argument("--agent", metavar="AGENT_ID", help="run this node agent instead")
parser.add_argument(
    "--config", type=Path, help="the agent's config (default: see `replicante agent -h`)"
)
args = parser.parse_args()
if args.agent is not None:
    # Imported by the path that runs it: a node agent loads neither the core's workflows
    # nor the datastore clients.
    from worker.agent import run_agent

    exit_now(serve(lambda settings: run_agent(settings, args.agent, args.config)))
else:
    from worker.core import run_core_worker

    exit_now(serve(run_core_worker))
