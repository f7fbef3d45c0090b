"""What keeps a malformed message from disabling a workflow.

A signal's arguments come from any client (`temporal workflow signal --input ... --input
...`). The SDK drops a signal whose arguments do not convert to the handler's types, but
one with more or fewer arguments than the handler takes reaches the handler as a
TypeError, which fails the workflow task, and every task after it: the monitor stopped
probing and answered no query. So does a JSON null, which the SDK hands over as None
whatever the parameter's type. `SignalGuard` drops such a signal before its handler, with
a logged reason, and the workflow goes on. An update's arguments are checked the same way
before its validator: one that does not fit is rejected, and its handler never runs (the
SDK runs no validator for an update without one: every update here has one).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Sequence

from temporalio import workflow
from temporalio.worker import (
    HandleSignalInput,
    HandleUpdateInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from models.base import MAX_REASON


def unfit(handler: Callable[..., object], args: Sequence[object]) -> str | None:
    """Why `handler` cannot take `args`; None when it can. An argument must be an instance
    of its parameter's class, where that is a plain class (the SDK hands a handler `None`
    for a JSON null whatever the parameter's type), and text at most `MAX_REASON` long.

    >>> def pause(reason: str = "") -> None: ...
    >>> unfit(pause, ["a", "b"]), unfit(pause, [None]), unfit(pause, []), unfit(pause, ["a"])
    ('too many positional arguments', 'reason: NoneType, not str', None, None)
    >>> unfit(pause, ["x" * 32768])
    'reason: 32768 characters, more than 2000'

    """
    try:
        bound = inspect.signature(handler).bind(*args)
    except TypeError as error:
        return str(error)
    hints = typing.get_type_hints(handler)
    for name, value in bound.arguments.items():
        wanted = hints.get(name)
        if isinstance(wanted, type) and not isinstance(value, wanted):
            return f"{name}: {type(value).__name__}, not {wanted.__name__}"
        if isinstance(value, str) and len(value) > MAX_REASON:
            return f"{name}: {len(value)} characters, more than {MAX_REASON}"
    return None


class _SignalFit(WorkflowInboundInterceptor):
    async def handle_signal(self, input: HandleSignalInput) -> None:
        # The method itself, bound: the SDK's handler of an async method takes any
        # arguments. Our signals are named after their methods.
        handler = getattr(workflow.instance(), input.signal, None)
        if callable(handler) and (why := unfit(handler, input.args)) is not None:
            workflow.logger.warning(
                "dropped signal %s with %d argument(s): %s", input.signal, len(input.args), why
            )
            return
        await super().handle_signal(input)

    def handle_update_validator(self, input: HandleUpdateInput) -> None:
        # Before the update's own validator, which may take a None it was not written for:
        # raised here, the update is rejected, and its handler never runs.
        handler = getattr(workflow.instance(), input.update, None)
        if callable(handler) and (why := unfit(handler, input.args)) is not None:
            raise ValueError(f"update {input.update}: {why}")
        super().handle_update_validator(input)


class SignalGuard(Interceptor):
    """The core worker's interceptor for every workflow it runs."""

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        return _SignalFit
