"""What the query API and the `relaylog` command ask of a back end: the local data dir (DuckDB,
query/local.py) or the AWS stack (DynamoDB + S3, query/dynamo/).

Both return the same JSON shapes; `relaylog.query.api` turns them into responses, `relaylog.cli`
into tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from relaylog.prompts import DiffLine, Version, diff_lines
from relaylog.query.params import Bucket, ListParams, PageParams, StatsParams


class NotFound(LookupError):
    """The id names nothing; the message says which id."""


class Unsupported(ValueError):
    """This back end cannot answer this question (the message says why, and what can)."""


class Backend(Protocol):
    name: str
    finest_bucket: Bucket  # the shortest stats bucket it keeps: what `bucket` defaults to for short spans
    exact_percentiles: bool  # whether stats can take `exact` (else percentiles come from histograms)

    def list_requests(self, params: ListParams) -> dict[str, Any]:
        """{"data": [request summary + "scores", "request_preview", "response_preview"], "next_cursor": str | None}"""
        ...

    def get_request(self, request_id: str) -> dict[str, Any]:
        """The full record with bodies and "scores"; NotFound if there is none."""
        ...

    def add_scores(self, request_id: str, scores: Mapping[str, bool | float], comment: str | None) -> dict[str, Any]:
        """Store scores (and feedback) on a request; returns all its scores. NotFound if unknown."""
        ...

    def stats(self, params: StatsParams) -> dict[str, Any]:
        """Totals, groups, series and histograms (relaylog.query.cells.shape); Unsupported for `exact`
        where percentiles come from histograms."""
        ...

    def sessions(self, params: PageParams) -> dict[str, Any]: ...

    def session(self, session_id: str) -> dict[str, Any]: ...

    def users(self, params: PageParams, sort: str) -> dict[str, Any]:
        """sort: cost, requests or last_seen (descending)."""
        ...

    def prompts(self, params: PageParams) -> dict[str, Any]: ...

    def prompt_versions(self, prompt_id: str) -> list[Version]: ...

    def request_template(self, request_id: str) -> str | None: ...


def version_diff(versions: list[Version], before: int, after: int) -> dict[str, Any]:
    by_number = {v["version"]: v for v in versions}
    for number in (before, after):
        if number not in by_number:
            raise NotFound(f"no version {number}; this prompt has versions 1 to {len(versions)}")
    a, b = by_number[before], by_number[after]
    lines: list[DiffLine] = diff_lines(a["template"], b["template"])
    return {
        "from": {"version": before, "hash": a["hash"]},
        "to": {"version": after, "hash": b["hash"]},
        "lines": lines,
    }
