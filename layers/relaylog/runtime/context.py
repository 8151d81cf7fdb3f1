"""The invocation the running code serves: request id, deadline and X-Ray trace id, per asyncio task.

One process serving one invocation at a time can put the trace id in `_X_AMZN_TRACE_ID`, which is
what X-Ray, Powertools and botocore read, and the loop does that then. Serving many at once, that
one process-wide variable would hold whichever invocation started last; AWS's own runtime clients
stop setting it when `AWS_LAMBDA_MAX_CONCURRENCY` is set (aws-lambda-go #602, aws-lambda-ric 4's
`moveXRayHeaderToEnv`) and keep the id per invocation instead (Go's context, Node's
AsyncLocalStorage). Here that is a context variable: each invocation runs in its own task, and a
task's context is copied to the tasks it starts, so code running for an invocation reads its own.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

from .runtime_api import Invocation

_current: ContextVar[Invocation | None] = ContextVar("relaylog_invocation", default=None)


def enter(invocation: Invocation) -> None:
    """Make `invocation` the current task's (and the tasks it starts from now on)."""
    _current.set(invocation)


def current() -> Invocation | None:
    return _current.get()


def trace_id() -> str | None:
    """The X-Ray trace header (`Root=...;Parent=...;Sampled=...`) of the invocation being served."""
    invocation = _current.get()
    return invocation.trace_id if invocation is not None else None


class RequestIdFilter(logging.Filter):
    """Adds `aws_request_id` (the current invocation's, or "-") to every log record: lines of
    concurrent invocations interleave in one log stream, and this says whose each one is."""

    def filter(self, record: logging.LogRecord) -> bool:
        invocation = _current.get()
        record.aws_request_id = invocation.request_id if invocation is not None else "-"
        return True
