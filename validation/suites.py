"""Great Expectations suites derived from a data set spec: one per warehouse table and Feast view.

Suites (in this order): ``users``, ``items`` (the entity tables named in ``spec.entities``),
``interactions``, ``user_profile``, ``item_profile`` (the Feast views over the entity tables),
``user_text``, ``item_text`` (the rendered texts; table and Feast view share the name).
Column names come from the spec, except the warehouse's own conventions below
(``event_timestamp``, ``label``, the ``interactions`` table).

Every check is a stock GX expectation. GX has no expectation on the elements of a list
column, so those carry ``meta={EXPLODE: True}``: ``validation.runner`` runs them on the
column exploded to one row per element and reports them with the rest of the suite.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

import great_expectations.expectations as gxe
from great_expectations import ExpectationSuite
from great_expectations.expectations.expectation import Expectation
from great_expectations.expectations.row_conditions import Column

from core.spec import DatasetSpec, EntityName, FieldSpec, Kind

TIME_COLUMN = "event_timestamp"  # event time (interactions) or valid-from time (profiles, texts)
LABEL_COLUMN = "label"  # 0/1 click label in the interactions table
INTERACTIONS = "interactions"  # warehouse table of (user, item, rating, label, time) events
EXPLODE = "explode"  # meta key: run the expectation on the list column's elements, not its rows

# Values that a careless str() of a missing value renders as; never a real value in a text.
NULL_TOKENS = ("None", "nan", "NaN", "null", "NULL", "<NA>", "NaT")
# A value the text template renders when nothing stricter is known: tokens joined by single spaces.
ANY_VALUE = r"\S+(?: \S+)*"
# Whitespace other than single inner spaces: double spaces, tabs/newlines, leading/trailing blanks.
BAD_WHITESPACE = r"\s\s|[^\S ]|^\s|\s$"


def suite_names(spec: DatasetSpec) -> list[str]:
    """Names of the suites ``build_suites`` returns, in order."""
    entities = spec.entity_order
    return (
        [spec.entities[e].table for e in entities]
        + [INTERACTIONS]
        + [f"{e}_profile" for e in entities]
        + [spec.text_column(e) for e in entities]
    )


def build_suites(spec: DatasetSpec, now: datetime | None = None) -> dict[str, ExpectationSuite]:
    """One expectation suite per warehouse table and Feast feature view, keyed by its name.

    ``now`` (default: the current time; naive means UTC) caps the plausible event times:
    timestamps must lie in ``spec.time.min .. min(spec.time.max, now)``.
    """
    latest = latest_event_time(spec, now)
    suites: dict[str, ExpectationSuite] = {}

    def add(name: str, expectations: list[Expectation]) -> None:
        # Fresh expectation objects per suite: GX binds an expectation to the suite holding it.
        suites[name] = ExpectationSuite(name=name, expectations=expectations)

    for entity in spec.entity_order:
        add(spec.entities[entity].table, _profile_expectations(spec, entity, latest))
    add(INTERACTIONS, _interaction_expectations(spec, latest))
    for entity in spec.entity_order:
        # The Feast views read snapshots of the entity tables: the same contract, its own suite.
        add(f"{entity}_profile", _profile_expectations(spec, entity, latest))
    for entity in spec.entity_order:
        add(spec.text_column(entity), _text_expectations(spec, entity, latest))
    return suites


def is_element_check(expectation: Expectation) -> bool:
    """Whether the expectation applies to the elements of a list column (see EXPLODE)."""
    return bool((expectation.meta or {}).get(EXPLODE))


def latest_event_time(spec: DatasetSpec, now: datetime | None = None) -> datetime:
    """The latest plausible event time: the spec's maximum, never later than ``now`` (UTC)."""
    now = now or datetime.now(timezone.utc)
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    return min(spec.time.max, now)


# --- per table ---------------------------------------------------------------------------


def _profile_expectations(spec: DatasetSpec, entity: EntityName, latest: datetime) -> list[Expectation]:
    """An entity table (or its Feast profile view): every field of the entity, one row per version."""
    key = spec.entities[entity].key
    expectations = [e for f in spec.fields_of(entity) for e in _field_expectations(f)]
    return expectations + _time_expectations(spec, latest) + _versioned_table(key)


def _interaction_expectations(spec: DatasetSpec, latest: datetime) -> list[Expectation]:
    keys = [spec.entities[e].key for e in spec.entity_order]
    expectations = [e for k in keys for e in _field_expectations(spec.field(k))]
    expectations += _rating_expectations(spec)
    expectations += _time_expectations(spec, latest)
    expectations.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=[*keys, TIME_COLUMN]))
    expectations.append(gxe.ExpectTableRowCountToBeBetween(min_value=1))
    return expectations


def _text_expectations(spec: DatasetSpec, entity: EntityName, latest: datetime) -> list[Expectation]:
    """A rendered text table: key, text, valid-from time."""
    key = spec.entities[entity].key
    column = spec.text_column(entity)
    expectations = _field_expectations(spec.field(key))
    expectations += [
        gxe.ExpectColumnToExist(column=column),
        gxe.ExpectColumnValuesToNotBeNull(column=column),
        gxe.ExpectColumnValueLengthsToBeBetween(column=column, min_value=1),
        gxe.ExpectColumnValuesToMatchRegex(
            column=column,
            regex=text_regex(spec, entity),
            description=f"text follows the template '<display> is <value>.' over the {entity} fields in spec order",
        ),
        gxe.ExpectColumnValuesToNotMatchRegex(
            column=column, regex=BAD_WHITESPACE, description="no double, leading, trailing or non-space blanks"
        ),
        gxe.ExpectColumnValuesToNotMatchRegex(
            column=column,
            regex=_null_token_regex(),
            description=f"no rendered missing value ({', '.join(NULL_TOKENS)})",
        ),
    ]
    return expectations + _time_expectations(spec, latest) + _versioned_table(key)


# --- building blocks ---------------------------------------------------------------------


def _field_expectations(f: FieldSpec) -> list[Expectation]:
    """What the spec says about one field's column: presence, type, range, pattern, known values."""
    out: list[Expectation] = [gxe.ExpectColumnToExist(column=f.name)]
    if f.kind == Kind.ID:
        out.append(gxe.ExpectColumnValuesToNotBeNull(column=f.name))
        if f.dtype == "int64":
            # Feast join keys are Int64; a float column here means missing ids upstream.
            # (ExpectColumnValuesToBeOfType accepts numpy int64 and pandas Int64.)
            out.append(gxe.ExpectColumnValuesToBeOfType(column=f.name, type_="int64"))
    if f.range is not None:
        low, high = (_number(v) for v in f.range)
        out.append(gxe.ExpectColumnValuesToBeBetween(column=f.name, min_value=low, max_value=high))
    if f.pattern is not None:
        out.append(gxe.ExpectColumnValuesToMatchRegex(column=f.name, regex=f.pattern))
    if f.allowed is not None:
        values = [int(v) for v in f.allowed] if f.dtype == "int64" else list(f.allowed)
        if f.kind == Kind.MULTI:
            out.append(
                gxe.ExpectColumnValuesToBeInSet(
                    column=f.name,
                    value_set=values,
                    description=f"every element of {f.name} is a known value",
                    meta={EXPLODE: True},
                )
            )
        else:
            out.append(gxe.ExpectColumnValuesToBeInSet(column=f.name, value_set=values))
    return out


def _rating_expectations(spec: DatasetSpec) -> list[Expectation]:
    """Rating within the spec's scale; label 0/1 and equal to the rule rating >= threshold."""
    rating = spec.label.source
    threshold = _number(spec.label.threshold)
    return [
        gxe.ExpectColumnToExist(column=rating),
        gxe.ExpectColumnValuesToNotBeNull(column=rating),
        gxe.ExpectColumnValuesToBeBetween(column=rating, min_value=spec.rating.min, max_value=spec.rating.max),
        gxe.ExpectColumnToExist(column=LABEL_COLUMN),
        gxe.ExpectColumnValuesToNotBeNull(column=LABEL_COLUMN),
        gxe.ExpectColumnValuesToBeInSet(column=LABEL_COLUMN, value_set=[0, 1]),
        # The rule split in two conditional checks, so a bad label is reported with its own value.
        gxe.ExpectColumnValuesToBeInSet(
            column=LABEL_COLUMN,
            value_set=[1],
            row_condition=Column(rating) >= threshold,
            description=f"label is 1 where {rating} >= {threshold}",
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column=LABEL_COLUMN,
            value_set=[0],
            row_condition=Column(rating) < threshold,
            description=f"label is 0 where {rating} < {threshold}",
        ),
    ]


def _time_expectations(spec: DatasetSpec, latest: datetime) -> list[Expectation]:
    return [
        gxe.ExpectColumnToExist(column=TIME_COLUMN),
        gxe.ExpectColumnValuesToNotBeNull(column=TIME_COLUMN),
        gxe.ExpectColumnValuesToBeBetween(
            column=TIME_COLUMN,
            min_value=spec.time.min,
            max_value=latest,
            description=f"between {spec.time.min.isoformat()} and {latest.isoformat()} (spec range, not in the future)",
        ),
    ]


def _versioned_table(key: str) -> list[Expectation]:
    """Point-in-time tables: at most one row per key and valid-from time, and not empty."""
    return [
        gxe.ExpectCompoundColumnsToBeUnique(column_list=[key, TIME_COLUMN]),
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
    ]


# --- text template -----------------------------------------------------------------------


def text_regex(spec: DatasetSpec, entity: EntityName) -> str:
    """Regex a rendered entity text must match in full.

    The template is "<display> is <value>." per field in spec order, joined by single spaces,
    with null fields left out: the key's sentence is required, the others optional but in order.
    Values are constrained as far as the spec knows them (value-map words, allowed values, ints).
    """
    fields = spec.fields_of(entity)
    key_index = [f.name for f in fields].index(spec.entities[entity].key)
    sentences = [
        f"{_escape(f.display)} is {_value_regex(f, [g.display for g in fields[i + 1 :]])}\\."
        for i, f in enumerate(fields)
    ]
    parts = (
        [f"(?:{s} )?" for s in sentences[:key_index]]
        + [sentences[key_index]]
        + [f"(?: {s})?" for s in sentences[key_index + 1 :]]
    )
    return "^" + "".join(parts) + "$"


def _value_regex(f: FieldSpec, later_displays: list[str]) -> str:
    """How one field's value is rendered in the text.

    A free-text value (a title) may hold spaces and periods, but not the start of a later
    field's sentence: without that, "Title is X. Release year is 1995.0." would pass as a title.
    """
    words = list(f.value_map.values()) or f.allowed
    if words:
        # Longest first so an alternative that is a prefix of another never wins early.
        one = "(?:" + "|".join(_escape(w) for w in sorted(words, key=len, reverse=True)) + ")"
        return f"{one}(?:, {one})*" if f.kind == Kind.MULTI else one
    if f.dtype == "int64":
        return "-?[0-9]+"
    if f.pattern and f.pattern.startswith("^") and f.pattern.endswith("$") and not f.pattern.endswith("\\$"):
        return f"(?:{f.pattern[1:-1]})"
    if not later_displays:
        return ANY_VALUE
    next_sentence = "|".join(_escape(d) for d in later_displays)
    char = rf"(?:(?!\. (?:{next_sentence}) is )\S)"
    return f"{char}+(?: {char}+)*"


def _null_token_regex() -> str:
    """A missing value rendered as a whole value or list element ("Title is nan.", "Action, None.")."""
    tokens = "|".join(_escape(t) for t in NULL_TOKENS)
    return rf"(?: is |, )(?:{tokens})(?:\.(?: |$)|,)"


def _escape(text: str) -> str:
    """re.escape, but spaces stay readable (and portable to regex engines that reject "\\ ")."""
    return re.escape(text).replace("\\ ", " ")


def _number(value: float) -> int | float:
    """Spec numbers are floats in YAML; compare integer columns against ints."""
    return int(value) if float(value).is_integer() else value
