"""The model registry: immutable artifact folders plus one DuckDB table of versions and their stage.

A registered version is a copy of one training stage of a run, frozen under
``artifacts/registry/<name>/v<version>/`` (``model.safetensors``, ``config.json``,
``encoder.json``, ``metrics.json`` and ``MANIFEST.json`` with the sha256 of each file). The
folder is written to a temp folder and renamed into place *before* its row is inserted, so a
row never points at a half-written artifact; files are made read-only and their hashes are
checked before a model is loaded (``ModelVersion.verify``).

Each row records what is needed to reproduce and audit the model: method, backbone, test
AUC / LogLoss, the warehouse snapshot hash the training sets were built from, the Feast feature
service it serves on, the training time window, the code version, the config hash.

Stages: ``candidate`` (registered) -> ``production`` (one per name) -> ``archived``.
``promote`` is one DuckDB transaction: archive the current production, promote the candidate,
log the decision - a crash anywhere in between leaves the previous production in place.

DuckDB allows one writing process per file, so connections are short-lived (opened per call)
and retried while another process holds the file; the server polls cheaply (file stat) and
only opens the database when it changed.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb

from core.io import sha256_file
from core.settings import Paths
from serving.artifacts import code_version, make_read_only, remove_tree
from serving.promotion import METRICS, PromotionResult, WindowEvaluation, decide, metric_value
from serving.versions import (  # noqa: F401 - ArtifactIntegrityError: importable from here too
    ARCHIVED,
    ARTIFACT_FILES,
    CANDIDATE,
    COLUMNS,
    DEFAULT_NAME,
    DEFAULT_STAGE,
    FEATURE_SERVICES,
    PRODUCTION,
    SCHEMA,
    ArtifactIntegrityError,
    ModelVersion,
    RegistryError,
    now_iso,
    read_run,
    training_window,
)

log = logging.getLogger("clickprompt.registry")

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class Registry:
    """Model versions of one project home. Every method opens and closes its own connection."""

    def __init__(self, paths: Paths, db_path: Path | None = None, artifacts_root: Path | None = None,
                 lock_timeout: float = 15.0) -> None:
        self.paths = paths
        self.db_path = Path(db_path) if db_path else paths.registry
        self.root = Path(artifacts_root) if artifacts_root else paths.artifacts / "registry"
        self.lock_timeout = lock_timeout

    # --- connections -------------------------------------------------------------------

    @contextmanager
    def _connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A fresh connection; retried while another process holds the file's write lock."""
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.02
        while True:
            try:
                con = duckdb.connect(str(self.db_path))
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        try:
            for ddl in SCHEMA:
                con.execute(ddl)
            yield con
        finally:
            con.close()

    @property
    def _generation_path(self) -> Path:
        return self.db_path.with_name(self.db_path.name + ".generation")

    def _bump_generation(self) -> None:
        """Replace the marker file after each commit: a new inode, seen by ``change_token`` even when
        the database file's size and (coarse) mtime look unchanged."""
        tmp = self._generation_path.with_name(f"{self._generation_path.name}.tmp-{uuid.uuid4().hex[:8]}")
        tmp.write_text(uuid.uuid4().hex, encoding="utf-8")
        os.replace(tmp, self._generation_path)

    def change_token(self) -> tuple:
        """A cheap fingerprint (stat of the database, its WAL and the generation marker) that changes
        when the registry does. A change by other means is still seen by polling."""
        out: list[tuple[int, int, int] | None] = []
        for path in (self.db_path, self.db_path.with_name(self.db_path.name + ".wal"), self._generation_path):
            try:
                st = path.stat()
                out.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except FileNotFoundError:
                out.append(None)
        return tuple(out)

    # --- reads -------------------------------------------------------------------------

    def _select(self, where: str = "", params: list | None = None) -> list[ModelVersion]:
        if not self.db_path.exists():
            return []
        with self._connect() as con:
            rows = con.execute(f"SELECT {', '.join(COLUMNS)} FROM model_versions {where} ORDER BY name, version",
                               params or []).fetchall()
        return [ModelVersion._from_row(r) for r in rows]

    def list(self, name: str | None = None) -> builtins.list[ModelVersion]:
        """All versions (of ``name``, or of every name), oldest first."""
        return self._select("WHERE name = ?", [name]) if name else self._select()

    def get(self, version: int, name: str = DEFAULT_NAME) -> ModelVersion:
        rows = self._select("WHERE name = ? AND version = ?", [name, int(version)])
        if not rows:
            known = [v.version for v in self.list(name)]
            raise RegistryError(f"no version {version} of model {name!r} in {self.db_path} (known: {known})")
        return rows[0]

    def production(self, name: str = DEFAULT_NAME) -> ModelVersion | None:
        rows = self._select("WHERE name = ? AND stage = ?", [name, PRODUCTION])
        return rows[0] if rows else None

    def production_version(self, name: str = DEFAULT_NAME) -> int | None:
        """Only the version number of the current production (what a server polls)."""
        if not self.db_path.exists():
            return None
        with self._connect() as con:
            row = con.execute("SELECT version FROM model_versions WHERE name = ? AND stage = ?",
                              [name, PRODUCTION]).fetchone()
        return int(row[0]) if row else None

    def promotions(self, name: str = DEFAULT_NAME) -> builtins.list[dict]:
        """The promotion log: every decision, promoted or refused, oldest first."""
        if not self.db_path.exists():
            return []
        with self._connect() as con:
            cur = con.execute("SELECT * FROM promotions WHERE name = ? ORDER BY rowid", [name])
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, r)) for r in cur.fetchall()]

    # --- register ----------------------------------------------------------------------

    def _next_version(self, con: duckdb.DuckDBPyConnection, name: str) -> int:
        """One past the highest version in the table AND on disk: an orphan folder is never reused."""
        row = con.execute("SELECT max(version) FROM model_versions WHERE name = ?", [name]).fetchone()
        highest = int(row[0]) if row and row[0] is not None else 0
        folder = self.root / name
        if folder.is_dir():
            for p in folder.iterdir():
                if p.name.startswith("v") and p.name[1:].isdigit():
                    highest = max(highest, int(p.name[1:]))
        return highest + 1

    def register(self, run_dir: Path | str, stage: str = DEFAULT_STAGE, name: str = DEFAULT_NAME) -> ModelVersion:
        """Freeze ``run_dir/<stage>`` as the next version of ``name`` (stage ``candidate``)."""
        if not _NAME.match(name):
            raise RegistryError(f"model name {name!r} must match {_NAME.pattern}")
        if stage not in FEATURE_SERVICES:
            raise RegistryError(f"stage {stage!r} cannot be served; registrable stages: {sorted(FEATURE_SERVICES)}")
        run_dir = Path(run_dir).expanduser().resolve()
        config, metrics = read_run(run_dir, stage)
        if metrics.get("stage", stage) != stage:
            raise RegistryError(f"{run_dir / stage / 'metrics.json'} belongs to stage {metrics.get('stage')!r}")
        snapshot_hash = metrics.get("snapshot_hash")
        config_hash = metrics.get("config_hash") or hashlib.sha256(
            json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
        train_start, train_end = training_window(run_dir)
        code = code_version()

        # 1. the artifact, complete and read-only, in a temp folder beside its final place
        (self.root / name).mkdir(parents=True, exist_ok=True)
        tmp = self.root / name / f".tmp-{uuid.uuid4().hex[:12]}"
        tmp.mkdir()
        final: Path | None = None
        try:
            sources = {"model.safetensors": run_dir / stage / "model.safetensors",
                       "config.json": run_dir / "config.json", "encoder.json": run_dir / "encoder.json",
                       "metrics.json": run_dir / stage / "metrics.json"}
            for target, source in sources.items():
                shutil.copyfile(source, tmp / target)
            files = {target: sha256_file(tmp / target) for target in ARTIFACT_FILES}
            created = now_iso()
            (tmp / "MANIFEST.json").write_text(json.dumps(
                {"name": name, "training_stage": stage, "source_run": str(run_dir), "created_at": created,
                 "files": files}, indent=2), encoding="utf-8")
            for p in tmp.iterdir():  # flush file contents before the rename makes them visible
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
            make_read_only(tmp)

            # 2. under the database's write lock: pick the version, rename the folder, insert the row
            with self._connect() as con:
                con.execute("BEGIN TRANSACTION")
                try:
                    version = self._next_version(con, name)
                    final = self.root / name / f"v{version}"
                    os.rename(tmp, final)
                    mv = ModelVersion(
                        name=name, version=version, stage=CANDIDATE, training_stage=stage,
                        method=config.get("method"), backbone=config.get("backbone"),
                        metrics=dict(metrics["test"]), snapshot_hash=snapshot_hash,
                        feature_service=FEATURE_SERVICES[stage], train_start=train_start, train_end=train_end,
                        code_version=code, config_hash=config_hash, created_at=created,
                        stage_changed_at=created, artifact_dir=str(final), files=files, source_run=str(run_dir))
                    row = mv.to_dict()
                    row.update(auc=metric_value(mv.metrics, "auc"), logloss=metric_value(mv.metrics, "logloss"),
                               metrics=json.dumps(mv.metrics, default=float), files=json.dumps(files))
                    con.execute(f"INSERT INTO model_versions ({', '.join(COLUMNS)}) VALUES "
                                f"({', '.join('?' for _ in COLUMNS)})", [row[c] for c in COLUMNS])
                    con.execute("COMMIT")
                except BaseException:
                    _rollback(con)
                    raise
        except BaseException:
            for folder in (tmp, final):  # no row points at it: remove what this call wrote
                if folder is not None and folder.exists():
                    remove_tree(folder)
            raise
        self._bump_generation()
        log.info("registered %s v%d from %s (%s, test AUC %s)", name, version, run_dir, stage, mv.metrics.get("auc"))
        return mv

    # --- promote -----------------------------------------------------------------------

    def _between_updates(self, con: duckdb.DuckDBPyConnection, name: str, version: int) -> None:
        """Runs inside the promotion transaction after the old production is archived and before the
        candidate is promoted. A no-op; tests replace it to crash there."""

    def promote(self, version: int, name: str = DEFAULT_NAME, metric: str = "auc", force: bool = False,
                margin: float = 0.0, evaluation: WindowEvaluation | None = None) -> PromotionResult:
        """Make ``version`` production if it beats the current production on ``metric`` by at least
        ``margin`` (or ``force``).

        Without ``evaluation`` each side's figure is the test metric its own run recorded. With it,
        both figures come from ``evaluation``: the candidate and the production model scored on one
        shared window (``serving.challenge``); the production model must be the one it scored. The
        old production becomes ``archived``. All of it is one transaction; the decision (also a
        refusal), both figures, what they were measured on and the margin are logged in ``promotions``.
        """
        if metric not in METRICS:
            raise RegistryError(f"unknown metric {metric!r}; known: {sorted(METRICS)}")
        if evaluation is not None and evaluation.metric != metric:
            raise RegistryError(f"the evaluation compares {evaluation.metric}, not {metric}")
        version = int(version)
        with self._connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                rows = con.execute(f"SELECT {', '.join(COLUMNS)} FROM model_versions WHERE name = ? "
                                   "AND (version = ? OR stage = ?)", [name, version, PRODUCTION]).fetchall()
                found = {mv.version: mv for mv in map(ModelVersion._from_row, rows)}
                if version not in found:
                    raise RegistryError(f"no version {version} of model {name!r} in {self.db_path}")
                candidate = found[version]
                current = next((mv for mv in found.values() if mv.stage == PRODUCTION), None)
                previous = current.version if current else None
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
                    if current is not None:
                        con.execute("UPDATE model_versions SET stage = ?, stage_changed_at = ? WHERE name = ? "
                                    "AND version = ?", [ARCHIVED, now, name, current.version])
                    self._between_updates(con, name, version)
                    con.execute("UPDATE model_versions SET stage = ?, stage_changed_at = ? WHERE name = ? "
                                "AND version = ?", [PRODUCTION, now, name, version])
                con.execute("INSERT INTO promotions (name, version, previous_version, metric, candidate_value, "
                            "production_value, forced, promoted, reason, decided_at, basis, margin) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            [name, version, previous, metric, cand_value, prod_value, force,
                             promoted, reason, now, basis, margin])
                con.execute("COMMIT")
            except BaseException:
                _rollback(con)
                raise
        if promoted:
            self._bump_generation()
        log.info("promotion of %s v%d: %s", name, version, reason)
        return PromotionResult(name=name, version=version, promoted=promoted, reason=reason, metric=metric,
                               candidate_value=cand_value, production_value=prod_value, previous_version=previous,
                               forced=force, basis=basis, margin=margin)


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:  # the transaction already ended (e.g. a failed COMMIT)
        pass
