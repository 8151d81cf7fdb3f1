"""Scores and feedback: one item per scored request (`SCORE#<id>`, `scores` map, `feedback_comment`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from relaylog.aws import layout
from relaylog.query.dynamo.items import plain
from relaylog.query.dynamo.table import Table
from relaylog.query.params import BadRequest


def _key(request_id: str) -> dict[str, Any]:
    return {"pk": {"S": layout.score_pk(request_id)}, "sk": {"S": "scores"}}


def as_json(item: Mapping[str, Any]) -> dict[str, Any]:
    """A scores item's map as the API shows it: by name, numbers as float, booleans as they are."""
    found = item.get("scores") or {}
    return {name: value if isinstance(value, bool) else float(value) for name, value in sorted(found.items())}


class Scores:
    def __init__(self, table: Table) -> None:
        self.table = table

    def of(self, request_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The scores of these requests, by id (requests without any left out)."""
        keys = [_key(request_id) for request_id in dict.fromkeys(request_ids)]
        return {item["pk"].partition("#")[2]: as_json(item) for item in map(plain, self.table.get_items(keys))}

    def with_comment(self, request_id: str) -> tuple[dict[str, Any], str | None]:
        """A request's scores and the comment of its latest feedback."""
        answer = self.table.client.get_item(TableName=self.table.name, Key=_key(request_id))
        item = plain(answer.get("Item", {}))
        return as_json(item), item.get("feedback_comment")

    def add(self, request_id: str, scores: Mapping[str, bool | float], comment: str | None) -> dict[str, Any]:
        """Store scores on a request (known to exist); returns all of its scores."""
        inside, whole = _updates(scores, comment)
        # A SET inside the map needs the map: else it is created whole. Should another writer create it
        # between the two, the first form is right the third time.
        for update in (inside, whole, inside):
            try:
                answer = self.table.client.update_item(
                    TableName=self.table.name, Key=_key(request_id), ReturnValues="ALL_NEW", **update
                )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                    raise
                continue
            return {"request_id": request_id, "scores": as_json(plain(answer["Attributes"]))}
        raise RuntimeError(f"scores of {request_id} not stored: the scores item kept changing")


def _attribute(value: bool | float) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"BOOL": value}
    exact = Decimal(repr(float(value)))
    if exact and not -130 <= exact.adjusted() <= 125:  # what a DynamoDB number can hold
        raise BadRequest(f"score value {value!r} is too large or too small to store")
    return {"N": f"{exact:f}"}


def _updates(scores: Mapping[str, bool | float], comment: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """UpdateItem arguments storing these scores: inside an existing map, and as a new map. The feedback
    comment goes with the latest feedback score, as in the local store (none given: none kept)."""
    values = {f":v{i}": _attribute(value) for i, value in enumerate(scores.values())}
    extra: dict[str, Any] = {}
    sets, remove = [], ""
    if "feedback" in scores:
        if comment is not None:
            sets.append("feedback_comment = :comment")
            extra[":comment"] = {"S": comment}
        else:
            remove = " REMOVE feedback_comment"
    inside = {
        "UpdateExpression": "SET "
        + ", ".join([*(f"scores.#n{i} = :v{i}" for i in range(len(scores))), *sets])
        + remove,
        "ConditionExpression": "attribute_exists(scores)",
        "ExpressionAttributeNames": {f"#n{i}": name for i, name in enumerate(scores)},
        "ExpressionAttributeValues": {**values, **extra},
    }
    whole = {
        "UpdateExpression": "SET " + ", ".join(["scores = :scores", *sets]) + remove,
        "ConditionExpression": "attribute_not_exists(scores)",
        "ExpressionAttributeValues": {":scores": {"M": dict(zip(scores, values.values(), strict=True))}, **extra},
    }
    return inside, whole
