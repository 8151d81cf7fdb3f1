"""DuckDB column types for record schema v1, derived from `record.Record`.

Reading with an explicit column spec (instead of letting DuckDB sniff the files) means an empty
data dir, records missing a field and records from a newer writer all give the same columns.
"""

from __future__ import annotations

import types
import typing

from relaylog.record import FIELDS, Record

_SCALARS: dict[object, str] = {str: "VARCHAR", int: "BIGINT", float: "DOUBLE", bool: "BOOLEAN"}


def _duckdb_type(hint: object) -> str:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        present = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(present) == 1:
            return _duckdb_type(present[0])
    elif hint in _SCALARS:
        return _SCALARS[hint]
    elif typing.get_origin(hint) is dict and typing.get_args(hint) == (str, str):
        return "MAP(VARCHAR, VARCHAR)"
    # A new kind of field needs a decision here, not a silent VARCHAR.
    raise TypeError(f"no DuckDB type for record field type {hint!r}")


_HINTS = typing.get_type_hints(Record)

COLUMNS: dict[str, str] = {name: _duckdb_type(_HINTS[name]) for name in FIELDS}


def empty_select() -> str:
    """SQL for zero rows with exactly the record columns, for a data dir with no files yet."""
    cols = ", ".join(f'CAST(NULL AS {kind}) AS "{name}"' for name, kind in COLUMNS.items())
    return f"SELECT {cols} WHERE false"
