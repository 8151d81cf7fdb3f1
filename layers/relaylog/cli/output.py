"""What the commands print: aligned tables, numbers, times, bodies and JSON on stdout; the store's
warnings as one line each on stderr."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson


class _StderrWarnings(logging.Handler):
    """Store warnings (skipped lines, unreadable bodies) as `relaylog: warning: ...` lines."""

    def emit(self, record: logging.LogRecord) -> None:
        # sys.stderr looked up per message, so redirected or captured stderr is honoured.
        print(f"relaylog: {record.levelname.lower()}: {record.getMessage()}", file=sys.stderr)


def show_warnings_on_stderr() -> None:
    logger = logging.getLogger("relaylog")
    if not any(isinstance(h, _StderrWarnings) for h in logger.handlers):
        handler = _StderrWarnings()
        handler.setLevel(logging.WARNING)
        logger.addHandler(handler)


def _json_default(value: Any) -> Any:
    # What DuckDB can return that orjson does not serialise itself.
    if isinstance(value, Decimal):
        return tidy(float(value))
    return str(value)


def tidy(value: float, name: str = "") -> float:
    """A float without binary noise (3.7419999999999995 -> 3.742): times (`*_ms`) to 0.001 ms,
    costs (`*cost*`) to 1e-10 dollars, anything else to 12 significant digits (float64 holds
    15-17; sums of many values are noisy beyond 12)."""
    if name.endswith("_ms"):
        return round(value, 3)
    if "cost" in name:
        return round(value, 10)
    return float(f"{value:.12g}")


def _tidied(value: Any, name: str = "") -> Any:
    if isinstance(value, float):
        return tidy(value, name)
    if isinstance(value, Mapping):
        return {key: _tidied(item, str(key)) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_tidied(item, name) for item in value]
    return value


def print_json(value: Any) -> None:
    options = orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
    sys.stdout.write(orjson.dumps(_tidied(value), default=_json_default, option=options).decode() + "\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: frozenset[int] = frozenset()) -> str:
    """Columns padded to their widest cell, two spaces apart; those in `right` right-aligned."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = (c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
        return "  ".join(padded).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])


def pairs(lines: Sequence[tuple[str, str]]) -> str:
    """`name  value` lines, the values aligned."""
    width = max(len(name) for name, _ in lines)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in lines)


def time(created_at: str | None) -> str:
    if not created_at:
        return "-"
    try:
        return datetime.fromisoformat(created_at).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return created_at


def count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def cost(value: float | Decimal | None) -> str:
    """Dollars to the millionth, as every command shows them ($0.000014); a smaller non-zero
    amount gets the digits it needs to show its first one ($0.0000002), never an exponent."""
    if value is None:
        return "-"
    amount = abs(float(value))
    digits = 6
    while 0 < amount < 10.0**-digits and digits < 12:
        digits += 1
    return f"${value:.{digits}f}"


def number(value: float | Decimal) -> str:
    """A non-integer SQL value: 12 significant digits, without an exponent (0.0000141, not 1.41e-05)."""
    text = f"{float(value):.12g}"
    if "e" not in text:
        return text
    return f"{Decimal(text):f}"


def ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}ms" if value < 1000 else f"{value / 1000:.2f}s"


def errors(m: Mapping[str, Any]) -> str:
    return f"{m['errors']:,}" if m["error_rate"] is None else f"{m['errors']:,} ({m['error_rate']:.1%})"


def cell(value: Any, column: str = "") -> str:
    """A value of an SQL result; a column named like a cost is shown as every cost is."""
    if value is None:
        return "NULL"
    if isinstance(value, (float, Decimal)) and "cost" in column.lower():
        return cost(value)
    if isinstance(value, (float, Decimal)):
        return number(value)
    if isinstance(value, (dict, list)):
        return orjson.dumps(value, default=_json_default, option=orjson.OPT_NON_STR_KEYS).decode()
    return str(value)


def field(value: Any) -> str:
    """A field of a record."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def body(text: str | None) -> str:
    if text is None:
        return "(not stored)"
    try:
        return orjson.dumps(orjson.loads(text), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        return text  # SSE streams and non-JSON bodies as they were relayed
