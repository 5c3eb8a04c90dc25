"""Feature views: ID features (``<entity>_profile``) and rendered text (``<entity>_text``)."""

from datetime import timedelta

from feast import FeatureView, Field, FileSource
from feast.types import Array, Float64, Int64, PrimitiveFeastType, String

from core.spec import DatasetSpec, EntityName, FieldSpec, Kind
from feature_repo.entities import ENTITIES

# Profiles are slowly changing snapshots: a version is valid until a newer version replaces it, never
# expiring on its own. Feast reads ttl=0 as "no expiry"; any finite ttl would make as-of lookups after
# it see no features while the online store (which ignores ttl) still serves them: training/serving skew.
PROFILE_TTL = timedelta(0)


def feast_type(field: FieldSpec) -> PrimitiveFeastType | Array:
    if field.kind == Kind.MULTI:
        return Array(String)
    if field.kind == Kind.NUMERIC:
        return Float64
    return Int64 if field.dtype == "int64" else String


def profile_view(spec: DatasetSpec, entity: EntityName, source: FileSource) -> FeatureView:
    """The entity's ID-view fields (all but its key), e.g. user_profile: gender, age, occupation, zip."""
    return FeatureView(
        name=f"{entity}_profile",
        entities=[ENTITIES[entity]],
        ttl=PROFILE_TTL,
        schema=[Field(name=f.name, dtype=feast_type(f)) for f in spec.profile_fields(entity)],
        source=source,
        online=True,
        description=f"ID-view features of the {entity} for CTR models ({spec.name})",
        tags={"dataset": spec.name, "view": "id"},
    )


def text_view(spec: DatasetSpec, entity: EntityName, source: FileSource) -> FeatureView:
    """The entity's rendered "field is value." text, the language model's view of the same fields."""
    return FeatureView(
        name=f"{entity}_text",
        entities=[ENTITIES[entity]],
        ttl=PROFILE_TTL,
        schema=[Field(name=spec.text_column(entity), dtype=String)],
        source=source,
        online=True,
        description=f"Rendered text of the {entity}'s fields for language models ({spec.name})",
        tags={"dataset": spec.name, "view": "text"},
    )
