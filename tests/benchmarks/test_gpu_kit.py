"""The GPU kit's parts that need no training: what its run side imports, the float16 transport."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from benchmarks import gpu_kit
from core.settings import REPO_ROOT
from tests.tiny_plm import tiny_bert


def test_the_run_side_imports_no_feast_duckdb_prefect_gx_or_mlflow():
    """The lent machine has none of them: importing what ``run`` uses must not pull them in."""
    code = ("import sys, benchmarks.gpu_kit, benchmarks.results, benchmarks.cost, benchmarks.ceiling, "
            "models.train.bundle, models.train.prepare; "
            "print([m for m in ('feast', 'duckdb', 'prefect', 'great_expectations', 'mlflow', 'fastapi') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_plm_weights_travel_as_float16_and_train_as_float32(tmp_path):
    from safetensors.torch import load_file

    model, tokenizer = tiny_bert()
    model.save_pretrained(tmp_path / "plm")
    tokenizer.save_pretrained(tmp_path / "plm")
    gpu_kit._cast_plm(tmp_path / "plm", tmp_path / "half", torch.float16)
    gpu_kit._cast_plm(tmp_path / "half", tmp_path / "wide", torch.float32)
    original, half, wide = (load_file(tmp_path / d / "model.safetensors") for d in ("plm", "half", "wide"))
    assert {t.dtype for t in half.values() if t.is_floating_point()} == {torch.float16}
    assert {t.dtype for t in wide.values() if t.is_floating_point()} == {torch.float32}
    for name, t in original.items():  # the pretrained weights, rounded to float16 and no further
        assert torch.equal(wide[name], t.half().float()), name
    assert gpu_kit._mib(tmp_path / "half") < gpu_kit._mib(tmp_path / "plm")
    assert json.loads((tmp_path / "wide" / "config.json").read_text()) == \
        json.loads((tmp_path / "plm" / "config.json").read_text())


def test_pack_before_the_data_is_ingested_says_what_to_run_first(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CLICKPROMPT_HOME", str(tmp_path / "home"))
    code = gpu_kit.main(["pack", str(tmp_path / "kit"), "--cells", "bert-2l-128--movielens-100k--global-temporal",
                         "--no-wheels"])
    assert code == 2
    err = capsys.readouterr().err
    assert err == f"error: no warehouse in {tmp_path / 'home'}: run `make data` first (MovieLens-100K)\n"
    assert list(tmp_path.iterdir()) == []  # no kit, and no half-written one beside it
