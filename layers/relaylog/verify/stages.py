"""The stages of a verification, what each one found, and the runner that stops at the first failure."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeVar, get_args

StageName = Literal["proxy", "delivery", "aggregator", "query_api", "dashboard", "athena"]
STAGES: tuple[StageName, ...] = get_args(StageName)
Status = Literal["ok", "failed", "skipped", "not_run"]

# Seconds each stage may take. Firehose's is its buffering interval plus DELIVERY_MARGIN_S,
# read from the deployed stream (aws.py); the rest allow for a cold start (the aggregator's,
# with DuckDB, takes seconds) and the SQS event source's batching window.
TIMEOUTS_S: dict[StageName, float] = {
    "proxy": 30.0,
    "delivery": 180.0,
    "aggregator": 120.0,
    "query_api": 30.0,
    "dashboard": 15.0,
    "athena": 120.0,
}
# Firehose writes an object some seconds after its buffer's interval ends; more under load.
DELIVERY_MARGIN_S = 120.0

T = TypeVar("T")


class StageFailed(Exception):
    """A stage did not see what it should have: `detail` says what, `checks` where to look."""

    def __init__(self, detail: str, checks: Iterable[str] = ()) -> None:
        super().__init__(detail)
        self.detail = detail
        self.checks = list(checks)


@dataclass
class Trail:
    """What the stages have learnt about the verification call so far, for the stages after them."""

    request_id: str
    # The verifier's clock just before the call (UTC).
    sent_at: datetime | None = None
    # The record as the store gave it back (at least created_at, dt and hour).
    record: dict[str, Any] = field(default_factory=dict)
    # Where Firehose put it: s3://bucket/key.
    object_url: str | None = None


@dataclass(frozen=True, slots=True)
class Result:
    stage: StageName
    status: Status
    seconds: float | None = None
    detail: str = ""
    checks: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "status": self.status,
            "seconds": None if self.seconds is None else round(self.seconds, 3),
            "detail": self.detail,
            "checks": list(self.checks),
        }


# A stage is called with its deadline (time.monotonic()) and says what it saw, or raises StageFailed.
Stage = Callable[[float], str]


def run(
    plan: list[tuple[StageName, Stage | str]],
    timeouts: dict[StageName, float],
    report: Callable[[Result], None],
    announce: Callable[[StageName, float], None] | None = None,
) -> list[Result]:
    """Run each stage in order; a plain string in the plan is a stage skipped, with the reason.
    After the first failure the remaining stages are not run. `announce` hears of each stage as it
    starts, `report` of its result."""
    results: list[Result] = []
    failed = False
    for name, stage in plan:
        if failed:
            result = Result(name, "not_run")
        elif isinstance(stage, str):
            result = Result(name, "skipped", detail=stage)
        else:
            if announce is not None:
                announce(name, timeouts[name])
            began = time.monotonic()
            try:
                detail = stage(began + timeouts[name])
                result = Result(name, "ok", time.monotonic() - began, detail)
            except StageFailed as failure:
                failed = True
                result = Result(name, "failed", time.monotonic() - began, failure.detail, tuple(failure.checks))
        results.append(result)
        report(result)
    return results


def poll(
    deadline: float, attempt: Callable[[], T | None], first_wait_s: float = 0.25, max_wait_s: float = 5.0
) -> T | None:
    """`attempt()` until it returns something other than None or `deadline` passes (then None).
    The waits between attempts double from `first_wait_s` to `max_wait_s`."""
    wait = first_wait_s
    while True:
        found = attempt()
        if found is not None:
            return found
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        time.sleep(min(wait, left))
        wait = min(wait * 2, max_wait_s)


def parse_timeout(text: str) -> tuple[StageName, float]:
    """`STAGE=SECONDS`, as `--timeout` takes it."""
    name, _, seconds = text.partition("=")
    stage = name.strip()
    if stage not in STAGES:
        raise ValueError(f"expected STAGE=SECONDS with STAGE one of {', '.join(STAGES)}, got {text!r}")
    try:
        value = float(seconds)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise ValueError(f"expected seconds between 0 and 3600 after {stage}=, got {seconds!r}")
    return stage, value
