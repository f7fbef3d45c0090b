"""Running operators' scripts to a clean exit, as the CLI exits (worker/process.py says why
teardown is skipped)."""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Coroutine
from typing import Any, NoReturn

from worker.process import exit_now


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
