"""The "field is value." text view, rendered in DuckDB SQL (vectorised) from the warehouse tables.

Template (ClickPrompt, PAPERS.md): for each field of an entity in spec order,
``"<display> is <value>."``, joined by single spaces. Codes with a value map are
rendered as their words; multi-valued fields as ``"a, b, c"``; null values are left out.
A sample's text is the user text and the item text joined by one space, in spec order.

``render_python`` is the same template as a plain Python function: the reference for the
golden tests and the baseline of the rendering benchmark. The SQL is what the platform runs.
"""

from __future__ import annotations

from typing import Any, Mapping

import duckdb

from clickprompt.data.spec import DatasetSpec, EntityName, FieldSpec, Kind


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


# --- plain-Python reference ------------------------------------------------------------


def _missing(value: Any) -> bool:
    """None, NaN or pandas' NA (list-like values are never missing here)."""
    if value is None or (isinstance(value, float) and value != value):
        return True
    return type(value).__name__ in ("NAType", "NaTType")


def _value_py(field: FieldSpec, value: Any) -> str | None:
    if _missing(value):
        return None
    vmap = field.value_map
    if field.dtype == "int64" and isinstance(value, float):  # nullable ints come back from parquet as floats
        value = int(value)
    if field.kind == Kind.MULTI:
        text = ", ".join(vmap.get(str(v), str(v)) for v in value)
    else:
        text = vmap.get(str(value), str(value)).strip()
    return text or None


def render_python(spec: DatasetSpec, entity: EntityName, row: Mapping[str, Any]) -> str:
    """The template for one row, in Python (reference for tests; baseline for the benchmark)."""
    parts = []
    for f in spec.fields_of(entity):
        value = _value_py(f, row.get(f.name))
        if value is not None:
            parts.append(f"{f.display} is {value}.")
    return " ".join(parts)


def sample_text(spec: DatasetSpec, texts: Mapping[str, str]) -> str:
    """A sample's text: the entity texts joined by one space, in spec order."""
    return " ".join(texts[spec.text_column(e)] for e in spec.entity_order)


def sample_texts(spec: DatasetSpec, frame) -> list[str]:
    """Vectorised ``sample_text`` over a DataFrame holding the entity text columns."""
    cols = [frame[spec.text_column(e)].astype(str) for e in spec.entity_order]
    out = cols[0]
    for col in cols[1:]:
        out = out + " " + col
    return out.tolist()


def field_spans(spec: DatasetSpec, entity: EntityName, row: Mapping[str, Any]) -> list[tuple[str, int, int]]:
    """Character span (start, end) of each field's VALUE inside ``render_python``'s text.

    ALT's field-level masking masks all tokens of one value; the tokenizer's offset mapping
    turns these character spans into token spans.
    """
    spans, pos = [], 0
    for f in spec.fields_of(entity):
        value = _value_py(f, row.get(f.name))
        if value is None:
            continue
        prefix = f"{f.display} is "
        start = pos + len(prefix)
        spans.append((f.name, start, start + len(value)))
        pos = start + len(value) + 2  # ". "
    return spans
