"""All Feast objects of one data set, built from its spec and snapshot folder."""

from dataclasses import dataclass
from pathlib import Path

from feast import Entity, FeatureService, FeatureView

from core.spec import DatasetSpec
from feature_repo.data_sources import snapshot_source
from feature_repo.entities import item, user
from feature_repo.feature_services import clickprompt_service, ctr_service
from feature_repo.feature_views import profile_view, text_view


@dataclass(frozen=True)
class Definitions:
    entities: list[Entity]
    views: dict[str, FeatureView]
    services: dict[str, FeatureService]

    @property
    def objects(self) -> list:
        return [*self.entities, *self.views.values(), *self.services.values()]


def build(spec: DatasetSpec, snapshot_dir: Path, offline_store: str = "duckdb") -> Definitions:
    """``offline_store``: which engine's sources the views read the snapshots through (core.backends)."""
    def source(table: str):
        return snapshot_source(table, snapshot_dir, offline_store)

    # an entity with no field but its key (a click log without a users table) has no profile view:
    # Feast defines no view of zero features; its id comes from the entity rows, its text from its view
    profiles = [profile_view(spec, e, source(spec.entities[e].table)) for e in ("user", "item")
                if spec.profile_fields(e)]
    texts = [text_view(spec, e, source(spec.text_column(e))) for e in ("user", "item")]
    views = {v.name: v for v in (*profiles, *texts)}
    services = {s.name: s for s in (ctr_service(profiles), clickprompt_service(profiles, texts))}
    return Definitions(entities=[user, item], views=views, services=services)
