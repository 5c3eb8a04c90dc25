"""Training bundles: a training set, its spec, a run config and (optionally) the PLM in one folder
that trains anywhere torch runs.

    <bundle>/bundle.json           what it holds: the training set's identity and manifest hash, the
                                   PLM folder (or name), when and from where it was exported
    <bundle>/training_set/         {train,valid,test}.parquet, spec.json, manifest.json (as built)
    <bundle>/config.json           the run config (optional: else --profile / --set on the command line)
    <bundle>/plm/                  the PLM's files (optional: else the config's ``plm``, fetched here, a folder or a name)

``clickprompt features export-bundle DIR`` writes one from a build (folder written aside, then
renamed into place); ``python -m models.train --bundle DIR`` (or ``clickprompt train --bundle
DIR``) trains from it. Training from a bundle imports torch, transformers, pydantic, pandas,
pyarrow, safetensors, yaml and tqdm, and none of Feast, DuckDB, Prefect or Great Expectations.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

from core.io import replace_dir, write_json_atomic
from core.settings import Paths
from core.training_data import TrainingData, TrainingSetRef, load_training_data
from models.train.config import TrainConfig, build_config, with_overrides

BUNDLE_FILE = "bundle.json"
TRAINING_SET_DIR = "training_set"
PLM_DIR = "plm"
CONFIG_FILE = "config.json"


def export_bundle(ref: TrainingSetRef, out: Path, cfg: TrainConfig | None = None,
                  plm_folder: Path | None = None) -> Path:
    """Write ``out`` (replacing a previous bundle there whole) from the training set ``ref``, with the
    run config ``cfg`` and a copy of ``plm_folder`` when given. Any other folder at ``out`` (not empty,
    not a bundle) is refused: replacing it would delete its files."""
    out = Path(out).resolve()
    here = Path.cwd().resolve()
    if out == here or out in here.parents:  # swapped away, a shell there would stand in a deleted folder
        raise ValueError(f"{out} is the working directory or holds it: a bundle replaces its folder whole; give "
                         "a new folder, e.g. ./bundle")
    if out.exists() and not (out / BUNDLE_FILE).is_file() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not a training bundle (no {BUNDLE_FILE}): a bundle replaces "
                              "its folder whole, so give a new or empty folder")
    manifest = ref.manifest()  # refuses a changed folder
    ref.verify_files(manifest)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(ref.folder, tmp / TRAINING_SET_DIR)
        if cfg is not None:
            write_json_atomic(tmp / CONFIG_FILE, cfg.model_dump(mode="json"))
        if plm_folder is not None:
            shutil.copytree(plm_folder, tmp / PLM_DIR)
        write_json_atomic(tmp / BUNDLE_FILE, {
            "training_set": {"identity": ref.identity, "manifest_hash": ref.manifest_hash,
                             "dataset": manifest.dataset, "split_policy": manifest.split_policy,
                             "rows": {k: v.rows for k, v in manifest.splits.items()}},
            "plm": PLM_DIR if plm_folder is not None else (cfg.plm if cfg else None),
            "config": CONFIG_FILE if cfg is not None else None,
            "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "source": str(ref.folder),
        })
        out.parent.mkdir(parents=True, exist_ok=True)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


class Bundle:
    """A bundle folder, read: its training data (sha256-checked), config and PLM source."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        path = self.folder / BUNDLE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{self.folder} is not a training bundle (no {BUNDLE_FILE}): write one with "
                                    "`clickprompt features export-bundle DIR`")
        self.meta = json.loads(path.read_text(encoding="utf-8"))
        want = self.meta["training_set"]["manifest_hash"]
        self.ref = TrainingSetRef(self.folder / TRAINING_SET_DIR, want)

    def data(self) -> TrainingData:
        return load_training_data(self.ref, verify=True)

    def config(self, profile: str | None = None, overrides: dict | None = None) -> TrainConfig:
        """The bundle's config with ``overrides`` on top, or ``profile``'s when the bundle has none
        (or a profile is asked for explicitly)."""
        path = self.folder / CONFIG_FILE
        if profile is None and path.is_file():
            raw = json.loads(path.read_text(encoding="utf-8"))
            return with_overrides(TrainConfig.model_validate(raw), overrides or {})
        return build_config(profile or "demo", overrides=overrides)

    def plm_source(self, cfg: TrainConfig) -> Path | str:
        """The bundle's PLM; else the config's, as the project home here has it (``data/plms/<name>``,
        fetched by `clickprompt plm fetch`), a folder, or else a hub name."""
        folder = self.folder / PLM_DIR
        return folder if folder.is_dir() else Paths.default().plm_source(cfg.plm)
