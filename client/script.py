"""Running short-lived client processes (the CLI, operators' scripts) to a clean exit.

A process that used a Temporal client can abort or segfault during interpreter teardown
(`PyGILState_Release ... must be current`, temporalio/sdk-python#300): the Rust core's
threads outlive the interpreter. Measured here with temporalio 1.35 on Python 3.11:
about 1 run in 4 of a plain connect-signal-query script. Skipping teardown avoids it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Coroutine
from typing import Any, NoReturn


def exit_now(code: int) -> NoReturn:
    """Flush what was printed and exit without interpreter teardown."""
    with contextlib.suppress(BrokenPipeError):
        sys.stdout.flush()
        sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def run_script(main: Coroutine[Any, Any, object]) -> NoReturn:
    """`asyncio.run(main)`, then a clean exit: 0, or 1 with the traceback on an error."""
    try:
        asyncio.run(main)
    except KeyboardInterrupt:
        exit_now(130)
    except Exception:
        traceback.print_exc()
        exit_now(1)
    exit_now(0)
