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

    views = {
        "user_profile": profile_view(spec, "user", source(spec.entities["user"].table)),
        "item_profile": profile_view(spec, "item", source(spec.entities["item"].table)),
        "user_text": text_view(spec, "user", source("user_text")),
        "item_text": text_view(spec, "item", source("item_text")),
    }
    services = {
        s.name: s
        for s in (
            ctr_service(views["user_profile"], views["item_profile"]),
            clickprompt_service(views["user_profile"], views["item_profile"], views["user_text"], views["item_text"]),
        )
    }
    return Definitions(entities=[user, item], views=views, services=services)
