"""Data set specs: one YAML file describes a data set's fields, entities, label and time.

A spec is data, not code. Loaders, the warehouse schema, the GX suites, the text
template, the Feast feature views and the CTR models' embeddings are all derived
from it, so a new data set of the same shape needs a spec and at most a small loader.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from enum import Enum
from functools import cached_property
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer, model_validator

from core.names import check_dataset_name

SPEC_DIR = Path(__file__).resolve().parent / "specs"

EntityName = Literal["user", "item"]


class Kind(str, Enum):
    """How a field is encoded on the ID side."""

    ID = "id"  # high-cardinality identifier; vocabulary learned from training data
    CATEGORICAL = "categorical"  # small set of known values
    MULTI = "multi"  # several categorical values per row (e.g. genres)
    NUMERIC = "numeric"  # a real number, embedded as value * vector
    TEXT = "text"  # free text (e.g. a title); one vocabulary entry per distinct string


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldSpec(_Strict):
    name: str  # column name in the warehouse and in Feast
    entity: EntityName  # which entity the field describes
    kind: Kind
    display: str  # human words used in the text template: "<display> is <value>."
    dtype: Literal["int64", "string"] = "string"  # type of one value in the warehouse
    # Known values. A list: the allowed set. A mapping: allowed raw values -> words for the text view.
    values: list[str] | dict[str, str] | None = None
    range: tuple[float, float] | None = None  # allowed numeric range (inclusive) for int64 fields
    pattern: str | None = None  # regex a string value must match (GX gate)
    separator: str | None = None  # multi-valued fields: what separates the values in a raw cell ("|")

    @property
    def value_map(self) -> dict[str, str]:
        return self.values if isinstance(self.values, dict) else {}

    @property
    def allowed(self) -> list[str] | None:
        if self.values is None:
            return None
        return list(self.values.keys()) if isinstance(self.values, dict) else list(self.values)


class TableSource(_Strict):
    """One raw table of the generic tabular loader (``loader: tabular``)."""

    path: str  # file (or a glob matching one file) relative to the raw data folder
    format: Literal["csv", "tsv", "parquet"] = "csv"
    separator: str | None = None  # default "," for csv, tab for tsv
    header: bool = True  # the first line names the columns (without one, columns are column0, column1, ...)
    encoding: str = "utf-8"  # utf-8, latin-1, ...
    columns: dict[str, str] = Field(default_factory=dict)  # spec field name -> the file's column (default: same)

    @property
    def delimiter(self) -> str:
        return self.separator or ("\t" if self.format == "tsv" else ",")


class EventsSource(TableSource):
    """The events table: both entity keys, a rating (or a 0/1 click column read as the rating, with
    ``rating: {min: 0, max: 1}`` and ``label: {threshold: 1}``), the event time; and the fields of
    an entity that has no table of its own."""

    time_column: str = "timestamp"
    # unix_s | unix_ms | iso8601 | date (YYYY-MM-DD) | a strftime pattern such as "%d/%m/%Y %H:%M"
    time_format: str = "unix_s"


class SourceSpec(_Strict):
    events: EventsSource
    users: TableSource | None = None  # None: the user's fields come from the events table (or only its id)
    items: TableSource | None = None


class EntitySpec(_Strict):
    key: str  # join key, e.g. user_id
    table: str  # warehouse table, e.g. users


class LabelSpec(_Strict):
    """click = rating >= threshold (the usual MovieLens rule)."""

    source: str = "rating"
    threshold: float = 4.0


class RatingSpec(_Strict):
    """The rating's scale: whole numbers by default (MovieLens' 1..5 stars); ``dtype: float64`` for
    fractional ratings such as half stars (MovieLens' later releases: 0.5..5.0)."""

    min: int | float = 1
    max: int | float = 5
    dtype: Literal["int64", "float64"] = "int64"

    @model_validator(mode="after")
    def _check(self) -> "RatingSpec":
        for end in ("min", "max"):
            if not math.isfinite(getattr(self, end)):
                raise ValueError(f"rating {end} {getattr(self, end)} is not a finite number")
        if self.min > self.max:
            raise ValueError(f"rating min {self.min} is above max {self.max}")
        if self.dtype == "int64":
            for end in ("min", "max"):
                value = getattr(self, end)
                if value != int(value):
                    raise ValueError(f"rating {end} {value} is not a whole number, and the ratings are dtype int64: "
                                     "set `dtype: float64` in the spec's rating block for fractional ratings")
                object.__setattr__(self, end, int(value))  # 5.0 -> 5 (frozen model): the scale as stored
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        """The default dtype is left out: a spec dumps as before dtype existed, so the hashes and
        Prefect cache keys made from existing specs stay the same."""
        out = handler(self)
        if self.dtype == "int64":
            out.pop("dtype", None)
        return out


class TimeSpec(_Strict):
    """Event time of interactions: unix seconds in the raw files, UTC in the warehouse."""

    min: datetime  # earliest plausible event (GX gate)
    max: datetime  # latest plausible event (GX gate); never later than now

    @field_validator("min", "max")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


# How a data set's events are split into train / valid / test (feature_repo.splits):
#   global-temporal    by event time over all events: what production sees (the default)
#   per-user-temporal  each user's last events are valid / test (leave-last-out by time)
#   random             seeded random rows (the ClickPrompt authors' 8:1:1)
SplitPolicy = Literal["global-temporal", "per-user-temporal", "random"]
SPLIT_POLICIES: tuple[str, ...] = ("global-temporal", "per-user-temporal", "random")


class DatasetSpec(_Strict):
    name: str
    description: str = ""
    loader: str  # name of the loader in ingestion.loaders.LOADERS
    entities: dict[EntityName, EntitySpec]
    fields: list[FieldSpec] = Field(min_length=2)
    label: LabelSpec = LabelSpec()
    rating: RatingSpec = RatingSpec()
    time: TimeSpec
    source: SourceSpec | None = None  # where the raw tables are and how they read (loader: tabular)
    split: SplitPolicy = "global-temporal"  # the training sets' default split policy (CLI --split overrides)

    @model_validator(mode="after")
    def _check(self) -> "DatasetSpec":
        check_dataset_name(self.name)
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"spec {self.name}: duplicate field names in {names}")
        for entity, ent in self.entities.items():
            keys = [f for f in self.fields if f.name == ent.key]
            if not keys or keys[0].entity != entity or keys[0].kind != Kind.ID:
                raise ValueError(f"spec {self.name}: entity {entity} needs an id field named {ent.key}")
            if keys[0].dtype != "int64":
                raise ValueError(f"spec {self.name}: the key {ent.key} of entity {entity} must be dtype int64 "
                                 "(the warehouse, Feast and the server join on integer ids)")
        if self.loader == "tabular" and self.source is None:
            raise ValueError(f"spec {self.name}: loader tabular needs a source block (the events table at least)")
        return self

    # --- derived views -------------------------------------------------------------

    def fields_of(self, entity: EntityName) -> list[FieldSpec]:
        """Fields of one entity, in spec order (the key first where the spec puts it)."""
        return [f for f in self.fields if f.entity == entity]

    def profile_fields(self, entity: EntityName) -> list[FieldSpec]:
        """Fields of one entity other than its join key: the profile feature view's features."""
        key = self.entities[entity].key
        return [f for f in self.fields_of(entity) if f.name != key]

    def field(self, name: str) -> FieldSpec:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"spec {self.name} has no field {name!r}")

    @cached_property
    def entity_order(self) -> list[EntityName]:
        """Entities in the order their first field appears: the order texts are concatenated in."""
        order: list[EntityName] = []
        for f in self.fields:
            if f.entity not in order:
                order.append(f.entity)
        return order

    def text_column(self, entity: EntityName) -> str:
        return f"{entity}_text"


def spec_dirs() -> list[Path]:
    """Where specs are found by name: the project home's ``specs/`` (a user's own data sets), then
    the built-in ones."""
    from core.settings import project_home

    return [project_home() / "specs", SPEC_DIR]


def load_spec(name_or_path: str | Path) -> DatasetSpec:
    """Load a spec by data set name (``movielens-100k``, looked up in ``spec_dirs()``) or from a YAML path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = next((d / f"{name_or_path}.yaml" for d in spec_dirs() if (d / f"{name_or_path}.yaml").exists()),
                    SPEC_DIR / f"{name_or_path}.yaml")
    if not path.exists():
        raise FileNotFoundError(f"no data set spec {name_or_path!r} (known: {', '.join(known_datasets())}; "
                                f"a spec of your own goes in {spec_dirs()[0]}/<name>.yaml)")
    try:
        with path.open(encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except yaml.YAMLError as exc:  # its message names the line and column
        raise ValueError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a data set spec is a YAML mapping (name:, entities:, fields:, ...), "
                         f"not {type(raw).__name__}")
    try:
        spec = DatasetSpec.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(f"{path}: invalid data set spec: {spec_problems(exc)}") from exc
    if not Path(name_or_path).suffix and spec.name != path.stem:  # every later step finds it by its name
        raise ValueError(f"{path}: the spec's name is {spec.name!r}, its file {path.name!r}: commands find a "
                         f"spec by its file name, so make them match (name: {path.stem}, or rename the file)")
    return spec


def spec_problems(exc: ValidationError) -> str:
    """pydantic's errors on one line, each with its key path; an unknown key gets the nearest known one."""
    import difflib

    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top)"
        if err["type"] == "extra_forbidden":
            model = _model_at(err["loc"][:-1])
            known = list(model.model_fields) if model else []
            near = difflib.get_close_matches(str(err["loc"][-1]), known, n=1, cutoff=0.6)
            hint = f"did you mean {near[0]!r}?" if near else f"known: {', '.join(known)}" if known else ""
            problems.append(f"{where}: unknown key" + (f" ({hint})" if hint else ""))
        else:
            problems.append(f"{where}: {err['msg']}")
    return "; ".join(problems)


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The spec model at a key path of pydantic's (list indexes and dict keys skipped), else None."""
    import typing

    model: type[BaseModel] | None = DatasetSpec
    for part in loc:
        if model is None:
            return None
        if not isinstance(part, str) or part not in model.model_fields:
            continue  # a list index or a dict key: the same element model
        todo, model = [model.model_fields[part].annotation], None
        while todo:  # the first model inside Optional[...] / list[...] / dict[..., ...] / unions
            t = todo.pop(0)
            if isinstance(t, type) and issubclass(t, BaseModel):
                model = t
                break
            todo.extend(typing.get_args(t))
    return model


def known_datasets() -> list[str]:
    return sorted({p.stem for d in spec_dirs() for p in d.glob("*.yaml")})
