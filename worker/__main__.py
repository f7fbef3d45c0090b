"""`python -m worker`: run the core worker (same as `replicante worker`)."""

import logging

from client.script import run_script
from worker.core import run_core_worker
from worker.settings import Settings

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
run_script(run_core_worker(Settings.from_env()))
