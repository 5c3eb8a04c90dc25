"""The online store: materialize the latest feature versions into SQLite, and read them back."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

from core.settings import Paths
from core.spec import DatasetSpec
from feature_repo.feature_services import CLICKPROMPT_SERVICE
from feature_repo.store import open_store

log = logging.getLogger("clickprompt.features")


def materialize(spec: DatasetSpec, paths: Paths, end: datetime | None = None, store=None) -> dict:
    """Load every feature view's latest version (as of ``end``, default now) into the online store."""
    store = store or open_store(paths)
    start = spec.time.min - timedelta(days=1)
    end = end or datetime.now(timezone.utc)
    store.materialize(start_date=start, end_date=end)
    views = [fv.name for fv in store.list_feature_views()]
    log.info("materialized %s for [%s, %s]", views, start.isoformat(), end.isoformat())
    return {"views": views, "start": start.isoformat(), "end": end.isoformat()}


def online_features(
    paths: Paths, entity_rows: list[dict[str, Any]], service: str = CLICKPROMPT_SERVICE, store=None
) -> dict[str, list]:
    """Feature values for ``entity_rows`` (e.g. ``[{"user_id": 1, "item_id": 1}]``) from SQLite."""
    store = store or open_store(paths)
    fs = store.get_feature_service(service)
    return store.get_online_features(features=fs, entity_rows=entity_rows).to_dict()
