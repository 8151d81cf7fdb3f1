"""DynamoBackend: the query Backend over the AWS stack, from the parts in this package."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from relaylog.aws import layout
from relaylog.aws.clients import make_client
from relaylog.config import Retention
from relaylog.prompts import Call, Version, template_of, versions
from relaylog.query.backend import NotFound, Unsupported
from relaylog.query.dynamo import lists
from relaylog.query.dynamo.index import RequestIndex
from relaylog.query.dynamo.items import summary
from relaylog.query.dynamo.records import INLINE_BODY_MAX, Records
from relaylog.query.dynamo.rollups import Rollups
from relaylog.query.dynamo.scores import Scores
from relaylog.query.dynamo.table import Table
from relaylog.query.filters import Filters
from relaylog.query.params import Bucket, ListParams, PageParams, StatsParams


def _no_search(filters: Filters) -> None:
    if filters.search is not None:
        raise Unsupported("body search runs on the local store only; on AWS use relaylog query --stack (Athena)")


class DynamoBackend:
    """`retention`: how long the stack keeps its index and hourly rollups (the query function reads it
    from its environment; by default the template's). `inline_body_max`: the largest body put in an
    answer as text, None for any size (see records.py)."""

    name = "aws"
    finest_bucket: Bucket = "hour"  # rollups are hourly and daily
    exact_percentiles = False  # rollups keep histograms

    def __init__(
        self,
        table: str,
        bucket: str,
        dynamodb: Any = None,
        s3: Any = None,
        retention: Retention | None = None,
        inline_body_max: int | None = INLINE_BODY_MAX,
    ) -> None:
        retention = retention or Retention()
        self.table = Table(dynamodb or make_client("dynamodb"), table)
        self.records = Records(s3 or make_client("s3"), bucket, inline_body_max)
        self.scores = Scores(self.table)
        self.index = RequestIndex(self.table, self.scores, self.records, retention.index_days)
        self.rollups = Rollups(self.table, retention.hourly_rollup_days, retention.index_days)

    def list_requests(self, params: ListParams) -> dict[str, Any]:
        _no_search(params.filters)
        return self.index.list_requests(params)

    def get_request(self, request_id: str) -> dict[str, Any]:
        record = self.records.full_record(self.table.index_item(request_id))
        scores, comment = self.scores.with_comment(request_id)
        return {**record, "scores": scores, "feedback_comment": comment}

    def add_scores(self, request_id: str, scores: Mapping[str, bool | float], comment: str | None) -> dict[str, Any]:
        self.table.index_item(request_id)  # NotFound for a request the index does not hold
        return self.scores.add(request_id, scores, comment)

    def stats(self, params: StatsParams) -> dict[str, Any]:
        _no_search(params.filters)
        return self.rollups.stats(params)

    def sessions(self, params: PageParams) -> dict[str, Any]:
        _no_search(params.filters)
        return lists.sessions(self.index, self.rollups, params)

    def session(self, session_id: str) -> dict[str, Any]:
        return lists.session(self.index, session_id)

    def users(self, params: PageParams, sort: str = "cost") -> dict[str, Any]:
        _no_search(params.filters)
        return lists.users(self.index, self.rollups, params, sort)

    def prompts(self, params: PageParams) -> dict[str, Any]:
        _no_search(params.filters)
        return lists.prompts(self.index, params)

    def template_texts(self, prompt_id: str) -> dict[str, str]:
        """Template hash -> text of a prompt's versions (a text too large for an item is not there)."""
        items = self.table.query_all(
            KeyConditionExpression="pk = :pk AND begins_with(sk, :t)",
            ExpressionAttributeValues={":pk": {"S": layout.prompt_pk(prompt_id)}, ":t": {"S": "T#"}},
        )
        return {item["sk"][2:]: item["template"] for item in items}

    def prompt_versions(self, prompt_id: str) -> list[Version]:
        items = self.table.query_all(
            IndexName="by_prompt",
            KeyConditionExpression="prompt_id = :p",
            ExpressionAttributeValues={":p": {"S": prompt_id}},
        )
        texts = self.template_texts(prompt_id) if items else {}
        calls = []
        for item in items:
            hashed = item.get("template")
            if hashed is None:  # no readable template: the aggregator found none in the body
                continue
            # A text too large for an item was not stored: the body then says it.
            text = texts.get(hashed) or template_of(self.records.full_record(item)["request_body"])
            if text is not None:
                row = summary(item)
                calls.append(Call(row["request_id"], row["created_at"], text, row["cost_usd"], row["latency_ms"]))
        if not calls:
            raise NotFound(f"no requests with prompt id {prompt_id!r} and a readable prompt")
        return versions(calls)

    def request_template(self, request_id: str) -> str | None:
        item = self.table.index_item(request_id)
        hashed, prompt_id = item.get("template"), item.get("prompt_id")
        if hashed and prompt_id:
            text = self.template_texts(prompt_id).get(hashed)
            if text is not None:
                return text
        return template_of(self.records.full_record(item)["request_body"])
