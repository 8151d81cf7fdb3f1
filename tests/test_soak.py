"""The soak, short: mixed calls through relaylog (locally, then on the Lambda runtime with the
Firehose sink under moto) while the provider stand-in fails at random and clients leave at random;
then one true record per call and, on AWS, rollups equal to the sums over the records.
`bench/soak.py` runs the long version; tests/support/soak.py has the logic and the known failures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from relaylog.standin import StandIn

from tests.support.soak import KNOWN, plan_calls, soak_aws, soak_local, table

pytestmark = [pytest.mark.soak, pytest.mark.aws]

SEED = 20261127
LOCAL_CALLS = 1000
AWS_CALLS = 60  # the aggregator under moto costs ~0.25 s per delivered object: see soak_aws


@pytest.fixture(scope="module")
def quiet_standin() -> Iterator[StandIn]:
    # Its own stand-in, not recording: a thousand requests with images would otherwise be kept.
    with StandIn(record=False) as standin:
        yield standin


def test_soak_local(quiet_standin: StandIn, tmp_path: Path) -> None:
    report = soak_local(plan_calls(SEED, LOCAL_CALLS), quiet_standin.url, tmp_path / "data", concurrency=24, seed=SEED)
    print(table([report], KNOWN))
    assert report.calls == report.records == LOCAL_CALLS
    assert report.ok(KNOWN), table([report], KNOWN)


def test_soak_aws(quiet_standin: StandIn) -> None:
    calls = plan_calls(SEED + 1, AWS_CALLS)
    report = soak_aws(calls, quiet_standin.url, concurrency=8, runtimes=4, wave=AWS_CALLS, seed=SEED)
    print(table([report], KNOWN))
    assert report.calls == report.records == AWS_CALLS
    assert report.rollups_checked > 0
    assert report.ok(KNOWN), table([report], KNOWN)
