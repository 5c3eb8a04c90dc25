"""The model registry: MLflow's model registry (the registry of record) over hash-checked, read-only
artifact folders.

A registered version is a registered-model version in the project's MLflow store
(``serving.tracking``: ``<home>/mlruns.db``, or ``MLFLOW_TRACKING_URI``), linked to the MLflow run
of the training run it came from (lineage). Its record - method, backbone, test AUC / LogLoss, the
warehouse snapshot, the Feast feature service, the training window, the code version, the config
hash, each artifact file's sha256 - lives in the version's tags (``clickprompt.*``). Its files
(``model.safetensors``, ``config.json``, ``encoder.json``, ``metrics.json``, ``MANIFEST.json``)
are frozen under ``artifacts/registry/<name>/<folder>/`` (the version's ``source``), written to a
temp folder and renamed into place *before* the version is created, made read-only, and checked
against the recorded hashes before a model is loaded (``ModelVersion.verify``).

Stages: ``production`` is the version behind the alias ``champion``; ``archived``, a version that
was production once; ``candidate``, any other. ``promote`` decides, then moves the alias in one
store write (the commit point: a crash before it leaves the old champion serving) and stores the
decision - refusals too, with both figures, what they were measured on and the margin - as a tag
of the version (``clickprompt.promotion.<time>``). Promotions of one store are serialised by a lock
file beside it. The server polls cheaply (file stat of the store and a generation marker).
"""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from dataclasses import replace
from pathlib import Path

from core.io import sha256_file
from core.locks import exclusive
from core.settings import Paths
from models.train.stages import REGISTRABLE_STAGES, serving_refusal
from serving.artifacts import code_version, make_read_only, remove_tree
from serving.promotion import METRICS, PromotionResult, WindowEvaluation, decide, metric_value
from serving.versions import (  # noqa: F401 - importable from here too
    ARCHIVED,
    ARTIFACT_FILES,
    CANDIDATE,
    CHAMPION,
    DEFAULT_NAME,
    DEFAULT_STAGE,
    FEATURE_SERVICES,
    PRODUCTION,
    PROMOTION_TAG,
    ArtifactIntegrityError,
    ModelVersion,
    NoProductionModelError,
    RegistryError,
    now_iso,
    read_run,
    record_tags,
    training_window,
    version_from_tags,
)

log = logging.getLogger("clickprompt.registry")

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class Registry:
    """Model versions of one project's MLflow store. ``db_path``: another SQLite store file."""

    def __init__(self, paths: Paths, db_path: Path | None = None, artifacts_root: Path | None = None,
                 lock_timeout: float = 15.0) -> None:
        from serving.tracking import tracking_uri

        self.paths = paths
        remote = db_path is None and os.environ.get("MLFLOW_TRACKING_URI")
        self.db_path = None if remote else Path(db_path) if db_path else paths.registry
        self.uri = tracking_uri(paths) if db_path is None else f"sqlite:///{self.db_path}"
        self.root = Path(artifacts_root) if artifacts_root else paths.artifacts / "registry"
        self.lock_timeout = lock_timeout
        self._mlc = None

    @property
    def client(self):
        if self._mlc is None:
            from mlflow import MlflowClient

            logging.getLogger("alembic").setLevel(logging.WARNING)
            if self.db_path is not None:
                self.db_path.parent.mkdir(parents=True, exist_ok=True)
            self._mlc = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        return self._mlc

    def _exists(self) -> bool:
        return self.db_path is None or self.db_path.exists()

    @property
    def _generation_path(self) -> Path:
        return (self.db_path or self.root / "store").with_name((self.db_path or Path("store")).name + ".generation")

    def _bump_generation(self) -> None:
        """Replace the marker file after each change: a new inode, seen by ``change_token``."""
        self._generation_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._generation_path.with_name(f"{self._generation_path.name}.tmp-{uuid.uuid4().hex[:8]}")
        tmp.write_text(uuid.uuid4().hex, encoding="utf-8")
        os.replace(tmp, self._generation_path)

    def change_token(self) -> tuple:
        """A cheap fingerprint that changes when the registry does: the stat of the SQLite store, its
        journal and the generation marker; against a server, the champion itself."""
        if self.db_path is None:
            return (self.production_version(),)
        out: list[tuple[int, int, int] | None] = []
        for path in (self.db_path, self.db_path.with_name(self.db_path.name + "-journal"), self._generation_path):
            try:
                st = path.stat()
                out.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except FileNotFoundError:
                out.append(None)
        return tuple(out)

    # --- reads -------------------------------------------------------------------------

    def _versions(self, name: str | None) -> builtins.list[ModelVersion]:
        if not self._exists():
            return []
        mlc = self.client
        found = mlc.search_model_versions(f"name = '{name}'" if name else None, max_results=10000)
        champions = {n: self.production_version(n) for n in {v.name for v in found}}
        out = [self._here(version_from_tags(v.name, int(v.version), v.tags, v.source, champions[v.name], v.run_id))
               for v in found if "clickprompt.training_stage" in v.tags]
        return sorted(out, key=lambda v: (v.name, v.version))

    def _here(self, mv: ModelVersion) -> ModelVersion:
        """``mv`` with its artifact folder in this registry's root where MLflow recorded (absolutely)
        another home's: a project home copied or moved elsewhere serves from its own copy, whether
        or not the original is still there. ``verify`` still checks every file's hash, so only the
        very files registered are served."""
        recorded = mv.path
        local = self.root / mv.name / recorded.name
        mine = recorded.resolve().is_relative_to(self.root.resolve())
        if not mine and recorded.parent.name == mv.name and local.is_dir():
            return replace(mv, artifact_dir=str(local))
        return mv

    def list(self, name: str | None = None) -> builtins.list[ModelVersion]:
        """All versions (of ``name``, or of every name), oldest first."""
        return self._versions(name)

    def get(self, version: int, name: str = DEFAULT_NAME) -> ModelVersion:
        from mlflow.exceptions import MlflowException

        try:
            v = self.client.get_model_version(name, str(int(version))) if self._exists() else None
        except MlflowException as exc:
            if not _not_found(exc):
                raise
            v = None
        if v is None:
            known = [mv.version for mv in self.list(name)]
            raise RegistryError(f"no version {version} of model {name!r} in {self.uri} (known: {known})")
        return self._here(version_from_tags(name, int(v.version), v.tags, v.source, self.production_version(name),
                                            v.run_id))

    def production(self, name: str = DEFAULT_NAME) -> ModelVersion | None:
        version = self.production_version(name)
        return None if version is None else self.get(version, name)

    def require_production(self, name: str = DEFAULT_NAME) -> ModelVersion:
        """The production version, or NoProductionModelError saying how to get one."""
        mv = self.production(name)
        if mv is None:
            raise NoProductionModelError.of(name, self.uri)
        return mv

    def production_version(self, name: str = DEFAULT_NAME) -> int | None:
        """Only the version behind the ``champion`` alias (what a server polls)."""
        from mlflow.exceptions import MlflowException

        if not self._exists():
            return None
        try:
            return int(self.client.get_model_version_by_alias(name, CHAMPION).version)
        except MlflowException as exc:  # no such model, or no champion yet; a store that fails is an error
            if _not_found(exc):
                return None
            raise

    def promotions(self, name: str = DEFAULT_NAME) -> builtins.list[dict]:
        """The promotion log: every decision, promoted or refused, oldest first."""
        if not self._exists():
            return []
        found = self.client.search_model_versions(f"name = '{name}'", max_results=10000)
        log_ = [json.loads(value) for v in found for key, value in v.tags.items() if key.startswith(PROMOTION_TAG)]
        return sorted(log_, key=lambda e: e["decided_at"])

    # --- register ----------------------------------------------------------------------

    def _freeze(self, run_dir: Path, stage: str, name: str, created: str) -> tuple[Path, dict]:
        """The artifact, complete and read-only, renamed into its final folder; (folder, sha256 per file)."""
        (self.root / name).mkdir(parents=True, exist_ok=True)
        key = uuid.uuid4().hex[:12]
        tmp, final = self.root / name / f".tmp-{key}", self.root / name / key
        tmp.mkdir()
        try:
            sources = {"model.safetensors": run_dir / stage / "model.safetensors",
                       "config.json": run_dir / "config.json", "encoder.json": run_dir / "encoder.json",
                       "metrics.json": run_dir / stage / "metrics.json"}
            for target, source in sources.items():
                shutil.copyfile(source, tmp / target)
            files = {target: sha256_file(tmp / target) for target in ARTIFACT_FILES}
            (tmp / "MANIFEST.json").write_text(json.dumps(
                {"name": name, "training_stage": stage, "source_run": str(run_dir), "created_at": created,
                 "files": files}, indent=2), encoding="utf-8")
            for p in tmp.iterdir():  # flush file contents before the rename makes them visible
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
            make_read_only(tmp)
            os.rename(tmp, final)
        except BaseException:
            remove_tree(tmp)
            raise
        return final, files

    def _lineage(self, run_dir: Path) -> str | None:
        """The MLflow run the training run was logged as (``serving.tracking``), if any."""
        from serving.tracking import TRAINING_EXPERIMENT, logged_run_of

        exp = self.client.get_experiment_by_name(TRAINING_EXPERIMENT)
        if exp is None:
            return None
        found = logged_run_of(self.client, [exp.experiment_id], run_dir)
        return found.info.run_id if found else None

    def register(self, run_dir: Path | str, stage: str = DEFAULT_STAGE, name: str = DEFAULT_NAME) -> ModelVersion:
        """Freeze ``run_dir/<stage>`` as the next version of ``name`` (stage ``candidate``)."""
        from mlflow.exceptions import MlflowException

        if not _NAME.match(name):
            raise RegistryError(f"model name {name!r} must match {_NAME.pattern}")
        if stage not in REGISTRABLE_STAGES:  # before the run is read; the method is checked after
            raise RegistryError(serving_refusal(stage, None))
        run_dir = Path(run_dir).expanduser().resolve()
        config, metrics = read_run(run_dir, stage)
        if refusal := serving_refusal(stage, config.get("method")):  # what the server could not load
            raise RegistryError(f"{run_dir}: {refusal}")
        if metrics.get("stage", stage) != stage:
            raise RegistryError(f"{run_dir / stage / 'metrics.json'} belongs to stage {metrics.get('stage')!r}")
        if (same := self.registered_as(run_dir, stage, name)) is not None:  # a re-run with no new data, say
            log.info("%s (%s) is %s v%d already: not registered again", run_dir, stage, name, same.version)
            return same
        config_hash = metrics.get("config_hash") or hashlib.sha256(
            json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
        train_start, train_end = training_window(run_dir)
        created = now_iso()
        folder, files = self._freeze(run_dir, stage, name, created)
        record = dict(training_stage=stage, method=config.get("method"), backbone=config.get("backbone"),
                      metrics=dict(metrics["test"]), snapshot_hash=metrics.get("snapshot_hash"),
                      feature_service=FEATURE_SERVICES[stage], train_start=train_start, train_end=train_end,
                      code_version=code_version(), config_hash=config_hash, created_at=created,
                      files=files, source_run=str(run_dir))
        try:  # the version and its record: one store write; a folder without a version is never served
            try:
                self.client.create_registered_model(name)
            except MlflowException:
                pass  # exists
            created_mv = self.client.create_model_version(name, folder.as_uri(), run_id=self._lineage(run_dir),
                                                          tags=record_tags(record))
        except BaseException:
            remove_tree(folder)
            raise
        self._bump_generation()
        mv = self.get(int(created_mv.version), name)
        auc = mv.metrics.get("auc")
        log.info("registered %s v%d from %s (%s, test AUC %s)", name, mv.version, run_dir, stage,
                 "n/a" if auc is None else f"{auc:.4f}")
        return mv

    def registered_as(self, run_dir: Path | str, stage: str = DEFAULT_STAGE,
                      name: str = DEFAULT_NAME) -> ModelVersion | None:
        """The version holding exactly this run's ``stage`` (same run folder, same weights and metrics),
        if any: registering is idempotent, so a retrain with nothing new adds no duplicate version."""
        run_dir = Path(run_dir).expanduser().resolve()
        weights, metrics = run_dir / stage / "model.safetensors", run_dir / stage / "metrics.json"
        same_run = [mv for mv in self.list(name) if mv.source_run == str(run_dir) and mv.training_stage == stage]
        if not same_run or not (weights.is_file() and metrics.is_file()):  # hashed only when it may match
            return None
        mine = {"model.safetensors": sha256_file(weights), "metrics.json": sha256_file(metrics)}
        return next((mv for mv in same_run if all(mv.files.get(k) == v for k, v in mine.items())), None)

    # --- promote -----------------------------------------------------------------------

    def _between_updates(self, client, name: str, version: int) -> None:
        """Runs after the decision and before the alias moves. A no-op; tests replace it to crash there."""

    def promote(self, version: int, name: str = DEFAULT_NAME, metric: str = "auc", force: bool = False,
                margin: float = 0.0, evaluation: WindowEvaluation | None = None) -> PromotionResult:
        """Make ``version`` production (the ``champion`` alias) if it beats the current production on
        ``metric`` by at least ``margin`` (or ``force``).

        Without ``evaluation`` each side's figure is the test metric its own run recorded. With it,
        both figures come from ``evaluation``: the candidate and the production model scored on one
        shared window (``serving.challenge``); the production model must be the one it scored. The
        decision (also a refusal), both figures, what they were measured on and the margin are stored
        with the version; the alias move is the commit point.
        """
        if metric not in METRICS:
            raise RegistryError(f"unknown metric {metric!r}; known: {sorted(METRICS)}")
        if evaluation is not None and evaluation.metric != metric:
            raise RegistryError(f"the evaluation compares {evaluation.metric}, not {metric}")
        version = int(version)
        lock = (self.db_path or self.root / name).with_name((self.db_path or self.root / name).name + ".promote")
        lock.parent.mkdir(parents=True, exist_ok=True)
        with exclusive(lock, f"promotions of {self.uri}", wait_s=self.lock_timeout):
            candidate = self.get(version, name)
            current = self.production(name)
            previous = current.version if current else None
            if previous == version:  # idempotent: a deploy script run twice is not a refusal
                return PromotionResult(name, version, False, f"{name} v{version} is already production; nothing to do",
                                       metric, None, None, previous, force, already=True)
            if evaluation is None:
                basis = "each version's own test split"
                cand_value = metric_value(candidate.metrics, metric)
                prod_value = metric_value(current.metrics, metric) if current else None
            else:
                basis = evaluation.basis
                if version not in evaluation.values:
                    raise RegistryError(f"{name} v{version} was not scored on {basis}")
                if previous is not None and previous not in evaluation.values:
                    raise RegistryError(f"production is {name} v{previous}, which was not scored on {basis} "
                                        f"(scored: {sorted(evaluation.values)}): judge again")
                cand_value = evaluation.values[version]
                prod_value = evaluation.values.get(previous) if previous is not None else None
            promoted, reason = decide(name, version, cand_value, previous, prod_value, metric, force, margin)
            reason = f"{reason} [{basis}]"
            now = now_iso()
            if promoted:
                self._between_updates(self.client, name, version)
                self.client.set_registered_model_alias(name, CHAMPION, str(version))  # the commit point
            entry = {"name": name, "version": version, "previous_version": previous, "metric": metric,
                     "candidate_value": cand_value, "production_value": prod_value, "forced": force,
                     "promoted": promoted, "reason": reason, "decided_at": now, "basis": basis, "margin": margin}
            key = f"{PROMOTION_TAG}{now.replace('+00:00', 'Z')}"  # MLflow tag keys: no "+"
            self.client.set_model_version_tag(name, str(version), key, json.dumps(entry))
        if promoted:
            self._bump_generation()
        log.info("promotion of %s v%d: %s", name, version, reason)
        return PromotionResult(name=name, version=version, promoted=promoted, reason=reason, metric=metric,
                               candidate_value=cand_value, production_value=prod_value, previous_version=previous,
                               forced=force, basis=basis, margin=margin)


def _not_found(exc) -> bool:
    return getattr(exc, "error_code", "") in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}
