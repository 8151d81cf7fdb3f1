"""Sessions, users and prompts on AWS: which ones from the daily rollups (or, for prompts, the
index), their details from the request index."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

from relaylog.query import sessions as session_tree
from relaylog.query.backend import NotFound, Unsupported
from relaylog.query.dynamo.index import MAX_RANGE_ITEMS, RequestIndex
from relaylog.query.dynamo.items import END
from relaylog.query.dynamo.rollups import Rollups
from relaylog.query.dynamo.scan import Scan
from relaylog.query.dynamo.table import parallel
from relaylog.query.filters import Filters
from relaylog.query.params import PageParams

# Sessions or users looked up one by one in a call (a Query each).
MAX_LOOKUPS = 2_000


def sessions(index: RequestIndex, rollups: Rollups, params: PageParams) -> dict[str, Any]:
    """Sessions active in the range (daily rollups), looked at newest day first: a session last
    active on a later day always ends later than one last active on an earlier day."""
    filters = params.filters
    if filters.session is not None:
        latest = {filters.session: END}
    else:
        active = rollups.daily("session", filters, index.since(filters))
        latest = {value: max(day for day, _ in days) for value, days in active.items()}
    want = params.offset + params.limit + 1
    done: list[dict[str, Any]] = []
    for day, group in _newest_first(latest):
        if len(done) + len(group) > MAX_LOOKUPS:
            raise Unsupported(f"more than {MAX_LOOKUPS} sessions to look at: narrow since/until")
        for session_id, rows in zip(group, parallel(lambda s: index.session_rows(s, filters), group), strict=True):
            if rows:
                done.append(session_tree.summary(session_id, rows))
        if sum(1 for s in done if s["last_at"] >= day) >= want:
            break
    done.sort(key=lambda s: s["session_id"])
    done.sort(key=lambda s: s["last_at"], reverse=True)
    return _page(done, params)


def session(index: RequestIndex, session_id: str) -> dict[str, Any]:
    rows = index.session_rows(session_id, Filters())
    if not rows:
        raise NotFound(f"no session with id {session_id!r}")
    return {**session_tree.summary(session_id, rows), "tree": session_tree.tree(rows)}


def users(index: RequestIndex, rollups: Rollups, params: PageParams, sort: str) -> dict[str, Any]:
    """Users from the daily rollups of the range (whole days); first and last seen from by_user."""
    filters = params.filters
    if filters != Filters(since=filters.since, until=filters.until, user=filters.user):
        raise Unsupported("users on AWS come from daily rollups: filter by since, until and user only")
    active = rollups.daily("user", filters, index.since(filters))
    rows = [_user_row(user_id, days) for user_id, days in active.items()]
    rows.sort(key=lambda r: r["user_id"])
    if sort == "last_seen":
        rows = _by_last_seen(index, rows, filters, params.offset + params.limit + 1)
    else:
        column = "cost_usd" if sort == "cost" else "requests"
        rows.sort(key=lambda r: r[column], reverse=True)  # stable: ties stay by user_id
    answer = _page(rows, params)
    page = answer["data"]
    for row, first in zip(page, parallel(lambda r: index.seen(r["user_id"], filters, False), page), strict=True):
        row["first_seen"] = first
    if sort != "last_seen":
        for row, last in zip(page, parallel(lambda r: index.seen(r["user_id"], filters, True), page), strict=True):
            row["last_seen"] = last
    return answer


def _by_last_seen(index: RequestIndex, rows: list[dict[str, Any]], filters: Filters, want: int) -> list[dict[str, Any]]:
    """Rows (last_seen holding the last day active) by exact last_seen, newest first, looked up a
    day at a time until `want` are known: a later day always holds later calls."""
    by_user = {r["user_id"]: r for r in rows}
    done: list[dict[str, Any]] = []
    for _, group in _newest_first({r["user_id"]: r["last_seen"] for r in rows}):
        for user_id, last in zip(group, parallel(lambda u: index.seen(u, filters, True), group), strict=True):
            done.append({**by_user[user_id], "last_seen": last})
        if len(done) >= want:
            break
    done.sort(key=lambda r: r["last_seen"] or "", reverse=True)
    return done


def prompts(index: RequestIndex, params: PageParams) -> dict[str, Any]:
    """Prompt ids used in the range, from its index items (those with a prompt id)."""
    filters = params.filters
    span = index.span(filters)
    scan = Scan(index.table, index.streams(filters, span, True, only="attribute_exists(prompt_id)"), span)
    found: dict[str, dict[str, Any]] = {}
    for page in scan.pages():
        if scan.read > MAX_RANGE_ITEMS:
            raise Unsupported(
                f"listing prompts reads the requests of the range, and this one has more than {MAX_RANGE_ITEMS}:"
                " narrow since/until"
            )
        for row in index.matching(page, filters):
            if row["prompt_id"] is None:  # read through by_user, which cannot filter on prompt_id
                continue
            # Newest first: a prompt's first row is its last seen, each later one its first seen so far.
            at = row["created_at"]
            entry = found.setdefault(
                row["prompt_id"],
                {"prompt_id": row["prompt_id"], "requests": 0, "cost_usd": 0.0, "first_seen": at, "last_seen": at},
            )
            entry["requests"] += 1
            entry["cost_usd"] += row["cost_usd"] or 0.0
            entry["first_seen"] = at
    rows = sorted(found.values(), key=lambda r: r["prompt_id"])
    rows.sort(key=lambda r: r["last_seen"], reverse=True)
    return _page(rows, params)


def _user_row(user_id: str, days: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """A user's line from their daily rollup items; last_seen holds the last day active until looked up."""

    def total(name: str) -> Decimal:
        return sum((Decimal(item.get(name, 0)) for _, item in days), Decimal(0))

    return {
        "user_id": user_id,
        "requests": int(total("requests")),
        "errors": int(total("errors")),
        "cost_usd": float(total("cost_usd")),
        "input_tokens": int(total("input_tokens")),
        "output_tokens": int(total("output_tokens")),
        "first_seen": None,
        "last_seen": max(day for day, _ in days),
    }


def _newest_first(latest: Mapping[str, str]) -> Iterator[tuple[str, list[str]]]:
    """(day, the keys last active that day), newest day first; a day as the created_at prefix it is."""
    by_day: dict[str, list[str]] = {}
    for key, day in latest.items():
        by_day.setdefault(day, []).append(key)
    for day in sorted(by_day, reverse=True):
        yield day, sorted(by_day[day])


def _page(rows: list[dict[str, Any]], params: PageParams) -> dict[str, Any]:
    """An offset page of sorted rows, with local's numeric cursor."""
    page = rows[params.offset : params.offset + params.limit + 1]
    more = len(page) > params.limit
    return {"data": page[: params.limit], "next_cursor": str(params.offset + params.limit) if more else None}
