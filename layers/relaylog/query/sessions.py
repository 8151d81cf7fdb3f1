"""A session's requests as a tree by `session_path`, with totals per node: the same on every back end."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, TypedDict

from relaylog.query.filters import is_error


class Totals(TypedDict):
    requests: int
    errors: int
    cost_usd: float
    input_tokens: int
    output_tokens: int


class Node(TypedDict):
    name: str  # the last path segment; "" for the root
    path: str
    requests: list[dict[str, Any]]  # the requests made at exactly this path, oldest first
    children: list[Node]
    totals: Totals  # this node and everything under it


def totals(rows: Sequence[Mapping[str, Any]]) -> Totals:
    return Totals(
        requests=len(rows),
        errors=sum(1 for r in rows if is_error(r)),
        cost_usd=sum(r.get("cost_usd") or 0.0 for r in rows),
        input_tokens=sum(r.get("input_tokens") or 0 for r in rows),
        output_tokens=sum(r.get("output_tokens") or 0 for r in rows),
    )


def _segments(path: str | None) -> list[str]:
    return [s for s in (path or "").split("/") if s]


def _parse(created_at: str) -> datetime:
    return datetime.fromisoformat(created_at.replace("Z", "+00:00"))


def summary(session_id: str, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One session's line in the sessions list; `rows` are its requests."""
    ordered = sorted(rows, key=lambda r: r["created_at"])
    first, last = ordered[0], ordered[-1]
    end = max(_parse(r["created_at"]).timestamp() * 1000 + (r.get("latency_ms") or 0.0) for r in ordered)
    names = [r["session_name"] for r in ordered if r.get("session_name")]
    return {
        "session_id": session_id,
        "session_name": names[-1] if names else None,
        **totals(ordered),
        "first_at": first["created_at"],
        "last_at": last["created_at"],
        "duration_ms": round(end - _parse(first["created_at"]).timestamp() * 1000, 3),
        "users": sorted({r["user_id"] for r in ordered if r.get("user_id")}),
    }


def tree(rows: Sequence[Mapping[str, Any]]) -> Node:
    """Nodes for every path prefix that occurs; children in order of their first request."""
    root = Node(name="", path="/", requests=[], children=[], totals=totals([]))
    index: dict[tuple[str, ...], Node] = {(): root}
    members: dict[tuple[str, ...], list[Mapping[str, Any]]] = {(): []}
    for row in sorted(rows, key=lambda r: (r["created_at"], r["request_id"])):
        segments = tuple(_segments(row.get("session_path")))
        for depth in range(1, len(segments) + 1):
            prefix = segments[:depth]
            if prefix not in index:
                node = Node(name=prefix[-1], path="/" + "/".join(prefix), requests=[], children=[], totals=totals([]))
                index[prefix] = node
                index[prefix[:-1]]["children"].append(node)
                members[prefix] = []
        index[segments]["requests"].append(dict(row))
        for depth in range(len(segments) + 1):
            members[segments[:depth]].append(row)
    for prefix, node in index.items():
        node["totals"] = totals(members[prefix])
    return root
