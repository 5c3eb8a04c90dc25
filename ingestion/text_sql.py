"""The "field is value." text view rendered in SQL (vectorised) from the profile tables.

The template itself is ``core.template`` (its Python form is the reference the golden tests
compare this SQL with, and the baseline of the rendering benchmark); this is what the platform runs.
One builder writes it for two engines: DuckDB (the warehouse, the default) and Spark SQL (when
Feast's offline store is Spark: ``render_spark`` renders the text views from the profile snapshots
on the cluster). The dialects differ only in quoting, the string type and the list functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Mapping

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


Dialect = Literal["duckdb", "spark"]


def _ident(name: str, dialect: Dialect) -> str:
    return f"`{name}`" if dialect == "spark" else f'"{name}"'


def _value_sql(field: FieldSpec, dialect: Dialect = "duckdb") -> str:
    """SQL for the rendered value of one field; NULL when there is nothing to render."""
    col = _ident(field.name, dialect)
    inner = _mapped("x", field.value_map)
    if field.kind == Kind.MULTI and dialect == "spark":
        return f"NULLIF(array_join(transform({col}, x -> {inner}), ', '), '')"
    if field.kind == Kind.MULTI:
        return f"NULLIF(array_to_string(list_transform({col}, lambda x: {inner}), ', '), '')"
    string = "STRING" if dialect == "spark" else "VARCHAR"
    return f"NULLIF(TRIM({_mapped(f'CAST({col} AS {string})', field.value_map)}), '')"


def text_sql(spec: DatasetSpec, entity: EntityName, table: str | None = None, dialect: Dialect = "duckdb") -> str:
    """SELECT key, <entity>_text, event_timestamp FROM the entity table (one row per profile version)."""
    key = spec.entities[entity].key
    parts = [f"{_quote(f.display + ' is ')} || {_value_sql(f, dialect)} || '.'" for f in spec.fields_of(entity)]
    # concat_ws skips NULL arguments: a null value drops its whole "<display> is <value>." part.
    return (
        f"SELECT {_ident(key, dialect)}, concat_ws(' ', {', '.join(parts)}) AS {_ident(spec.text_column(entity), dialect)}, "
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


def render_spark(spark, spec: DatasetSpec, snapshot_dir: Path) -> dict[str, "object"]:
    """The text views as Spark DataFrames, rendered by Spark SQL from the profile snapshots
    (``<snapshot_dir>/<users|items>.parquet``, what Feast's Spark offline store reads): one per
    entity, named by its text column (``user_text`` / ``item_text``)."""
    out = {}
    for entity in spec.entity_order:
        table = spec.entities[entity].table
        view = f"clickprompt_{spec.name.replace('-', '_')}_{table}"
        spark.read.parquet(str(Path(snapshot_dir).resolve() / f"{table}.parquet")).createOrReplaceTempView(view)
        out[spec.text_column(entity)] = spark.sql(text_sql(spec, entity, table=view, dialect="spark"))
    return out
