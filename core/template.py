"""The "field is value." text template (ClickPrompt, PAPERS.md), in plain Python.

For each field of an entity in spec order, ``"<display> is <value>."``, joined by single
spaces. Codes with a value map are rendered as their words; multi-valued fields as
``"a, b, c"``; null values are left out. A sample's text is the user text and the item text
joined by one space, in spec order. ``ingestion.text_sql`` renders the same template in DuckDB
SQL for whole tables; ``render_python`` is its reference and ``field_spans`` tells where each
value sits in the text (ALT's field-level masking).
"""

from __future__ import annotations

from typing import Any, Mapping

from core.spec import DatasetSpec, EntityName, FieldSpec, Kind


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
