"""The "field is value." text view rendered in DuckDB SQL (vectorised) from the warehouse tables.

The template itself is ``core.template`` (its Python form is the reference the golden tests
compare this SQL with, and the baseline of the rendering benchmark); this is what the platform runs.
"""

from __future__ import annotations

from typing import Mapping

import duckdb

from core.spec import DatasetSpec, EntityName, FieldSpec, Kind


def _quote(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _mapped(expr: str, value_map: Mapping[str, str]) -> str:
    """SQL mapping a VARCHAR expression through a value map (unmapped values pass through)."""
    if not value_map:
        return expr
    whens = " ".join(f"WHEN {_quote(k)} THEN {_quote(v)}" for k, v in value_map.items())
    return f"(CASE {expr} {whens} ELSE {expr} END)"


def _value_sql(field: FieldSpec) -> str:
    """SQL for the rendered value of one field; NULL when there is nothing to render."""
    col = f'"{field.name}"'
    if field.kind == Kind.MULTI:
        inner = _mapped("x", field.value_map)
        return f"NULLIF(array_to_string(list_transform({col}, lambda x: {inner}), ', '), '')"
    return f"NULLIF(TRIM({_mapped(f'CAST({col} AS VARCHAR)', field.value_map)}), '')"


def text_sql(spec: DatasetSpec, entity: EntityName, table: str | None = None) -> str:
    """SELECT key, <entity>_text, event_timestamp FROM the entity table (one row per profile version)."""
    key = spec.entities[entity].key
    parts = [f"{_quote(f.display + ' is ')} || {_value_sql(f)} || '.'" for f in spec.fields_of(entity)]
    # concat_ws skips NULL arguments: a null value drops its whole "<display> is <value>." part.
    return (
        f'SELECT "{key}", concat_ws(\' \', {", ".join(parts)}) AS "{spec.text_column(entity)}", '
        f"event_timestamp FROM {table or spec.entities[entity].table}"
    )


def render_tables(con: duckdb.DuckDBPyConnection, spec: DatasetSpec) -> dict[str, int]:
    """(Re)build the text tables user_text / item_text from the profile tables. Returns row counts.

    Runs inside the caller's transaction, if any, so a failure leaves the previous text in place.
    """
    counts = {}
    for entity in spec.entity_order:
        name = spec.text_column(entity)
        con.execute(f"CREATE OR REPLACE TABLE {name} AS {text_sql(spec, entity)}")
        counts[name] = con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
    return counts
