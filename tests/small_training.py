"""A small learnable training set (the serving tests' synthetic ML-100K layout, 40 users x 24 items)
through the real path - ingest, Feast apply, point-in-time training sets - and a tiny BERT saved as
a PLM folder: what the training-option and cost-benchmark tests build a run from."""

from __future__ import annotations

from pathlib import Path

from core.settings import Paths


def small_training_data(root: Path):
    """(TrainingData, Paths) of a fresh home under ``root``."""
    from core.spec import load_spec
    from core.training_data import load_training_data
    from feature_repo.store import apply
    from feature_repo.training_sets import build_training_sets
    from ingestion.warehouse import ingest
    from tests.serving.conftest import write_synthetic_raw
    from validation import gate

    paths = Paths(root / "home")
    spec = load_spec("movielens-100k")
    ingest(spec, write_synthetic_raw(root / "raw"), paths.warehouse, paths.snapshots, gate)
    apply(spec, paths)
    return load_training_data(build_training_sets(spec, paths)), paths


def save_tiny_bert(folder: Path) -> Path:
    from tests.tiny_plm import tiny_bert

    model, tokenizer = tiny_bert()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
