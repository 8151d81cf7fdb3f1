"""Many invocations at once in one process, as Lambda Managed Instances runs a function.

On Managed Instances the Runtime API takes concurrent `GET next` and `POST .../response` requests,
up to `AWS_LAMBDA_MAX_CONCURRENCY` (https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html),
and hands out no more invocations than that at once. The environment is never frozen between
invocations, each invocation has its own timeout, and one timing out touches no other
(https://docs.aws.amazon.com/lambda/latest/dg/lambda-managed-instances-execution-environment.html).
So: that many pollers on one event loop, each asking for an invocation and serving it before
asking again (what aws-lambda-go does with one goroutine per slot); the records of all of them
sent by one background flusher every `FLUSH_INTERVAL_S`, never by a response; a failure inside
one invocation logged and kept to it.

Lambda sends SIGTERM before it ends an environment only when an extension is registered
(https://docs.aws.amazon.com/lambda/latest/dg/lambda-managed-instances-python-runtime.html,
"Initialization and shutdown"), and records now wait up to `FLUSH_INTERVAL_S` in the sink: an
internal extension registered for no events asks for that signal (what aws-lambda-go's
WithEnableSIGTERM does). On SIGTERM the pollers stop asking, those serving finish, the flusher
sends what they recorded, and the sink is closed.
"""

from __future__ import annotations

import asyncio
import logging

from ..relay.app import RelayApp
from ..sinks import Sink
from .invocations import Stop, handle
from .runtime_api import RuntimeAPI, RuntimeAPIError

log = logging.getLogger("relaylog.runtime")

# How long a record may wait in the sink. At 256 one-second streams a flush carries about 256
# records, one PutRecordBatch (500 records, 4 MiB at most; the sink splits larger ones): fewer,
# fuller batches, each one a boto3 call's CPU.
FLUSH_INTERVAL_S = 1.0
# The most one flush may take retrying Firehose before spooling to S3 (nothing here waits on it).
FLUSH_BUDGET_S = 5.0
EXTENSION_NAME = "relaylog-sigterm"


def max_concurrency(text: str | None) -> int:
    """`AWS_LAMBDA_MAX_CONCURRENCY` as a number of invocations: 1 (one at a time) when unset or
    not a positive whole number."""
    if text is None:
        return 1
    try:
        value = int(text)
    except ValueError:
        log.warning("AWS_LAMBDA_MAX_CONCURRENCY=%r is not a whole number: serving one invocation at a time", text)
        return 1
    return max(value, 1)


async def serve_concurrently(app: RelayApp, api: RuntimeAPI, stop: Stop, concurrency: int) -> None:
    """Up to `concurrency` invocations at once until `stop` is set; returns once every one under
    way has ended and its records were handed to the sink's last flush. Raises what broke a
    `GET next` (the Runtime API itself failing), after the others have finished."""
    extension = await _ask_for_sigterm(api)
    finished = asyncio.Event()
    flusher = asyncio.create_task(_flush_periodically(app.sink, finished))
    broken: list[BaseException] = []
    try:
        await asyncio.gather(*(_poll(app, api, stop, broken) for _ in range(concurrency)))
    finally:
        finished.set()
        await flusher
        if extension is not None:
            extension.cancel()
    if broken:
        raise broken[0]


async def _poll(app: RelayApp, api: RuntimeAPI, stop: Stop, broken: list[BaseException]) -> None:
    try:
        while (invocation := await stop.next(api)) is not None:
            try:
                await handle(app, api, invocation, process_wide_trace=False)
            except Exception:
                # The Runtime API refused an error report, or something unforeseen: this
                # invocation is lost, the poller and every other invocation go on.
                log.exception("invocation %s failed in the runtime", invocation.request_id)
    except Exception as exc:
        # `GET next` broke: the Runtime API is gone. The others finish what they serve, then the
        # runtime exits (as the one-at-a-time loop does at once).
        log.error("asking the Runtime API for an invocation failed: %s: %s", type(exc).__name__, exc)
        broken.append(exc)
        stop.set()


async def _flush_periodically(sink: Sink, finished: asyncio.Event) -> None:
    """Send the records every FLUSH_INTERVAL_S on a thread (the event loop never waits for
    Firehose), and once more when `finished` is set."""
    while not finished.is_set():
        try:
            await asyncio.wait_for(finished.wait(), FLUSH_INTERVAL_S)
        except TimeoutError:
            pass
        try:
            await asyncio.to_thread(sink.flush, FLUSH_BUDGET_S)
        except Exception:
            log.exception("sending records failed; they stay queued for the next flush")


async def _ask_for_sigterm(api: RuntimeAPI) -> asyncio.Task[None] | None:
    """Register an internal extension (before the first `GET next`, as Lambda requires) and keep
    its `event/next` open; None, and a warning, if Lambda would not take it."""
    try:
        extension_id = await api.register_extension(EXTENSION_NAME)
    except (OSError, RuntimeAPIError) as exc:
        log.warning("no SIGTERM at shutdown (the extension was not registered: %s): records may be lost then", exc)
        return None
    return asyncio.create_task(_hold(api, extension_id))


async def _hold(api: RuntimeAPI, extension_id: str) -> None:
    # Registered for no events, the call is answered only if Lambda ends the environment.
    try:
        await api.next_extension_event(extension_id)
    except (OSError, RuntimeAPIError, asyncio.IncompleteReadError):
        pass
