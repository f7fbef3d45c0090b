"""Running one of our processes to its end: a worker or agent (`python -m worker`), or the
CLI (client/cli.py), with one-line errors and the exit codes operators script against
(2 for bad input, 1 for anything else), and an exit that skips interpreter teardown.

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
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn

from temporalio.service import RPCError

from activities.service import LedgerBusyError
from config.settings import Settings
from config.temporal import connect_hint
from models import SpecError
from worker import logs


def exit_now(code: int) -> NoReturn:
    """Flush what was printed and exit without interpreter teardown."""
    with contextlib.suppress(BrokenPipeError):
        sys.stdout.flush()
        sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def fail(message: str) -> None:
    """One line per problem on stderr, each with the prefix, so each greps alone."""
    for line in message.splitlines():
        print(f"replicante: error: {line}", file=sys.stderr)


def serve(
    main: Callable[[Settings], Coroutine[Any, Any, int | None]],
    bad_input: tuple[type[Exception], ...] = (),
    refusals: tuple[type[Exception], ...] = (),
) -> int:
    """Run `main` with the environment's settings until it returns or is interrupted; its
    exit code (None is 0). Bad input (a SpecError, or one of `bad_input`) exits 2, a refusal
    (one of `refusals`, Temporal's, a connection that failed) 1, each as one line."""
    bad_input, refusals = (SpecError, *bad_input), (LedgerBusyError, *refusals)
    try:
        settings = Settings.from_env()
    except SpecError as error:
        fail(str(error))
        return 2
    try:
        logs.configure(settings)
        return asyncio.run(main(settings)) or 0
    except bad_input as error:
        fail(str(error))
        return 2
    except refusals as error:
        fail(str(error))
        return 1
    except RPCError as error:
        hint = ""
        if "Workflow Task in failed state" in error.message:
            log = Path(settings.home) / "worker" / "worker.log"
            hint = f"; the core worker's log says why (under `scripts/dev-up`: {log})"
        why = error.message.rstrip(".")
        fail(f"Temporal at {settings.temporal_address} refused: {why}{hint}")
        return 1
    except RuntimeError as error:
        # temporalio raises RuntimeError when it cannot connect.
        hint = connect_hint(settings.temporal_tls, str(error))
        fail(f"{error} (Temporal at {settings.temporal_address}; {hint})")
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`replicante status X | head`): nothing left to tell it.
        return 141
