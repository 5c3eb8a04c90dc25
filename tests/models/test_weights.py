"""Weights on disk: the same weights give the same bytes (a stage's fingerprint and a bundle's
digests name weights), and tied tensors come back tied."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from models.runtime import load_weights, save_weights, tied_names
from tests.tiny_plm import tiny_bert


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_same_weights_are_written_as_the_same_bytes(tmp_path: Path) -> None:
    # an LM's tied decoder gives two metadata entries under save_model, which safetensors writes in a
    # per-process random order: 8 saves of one model gave 2 different files before (20: 1 in 500,000
    # that the old writer passes)
    model, _ = tiny_bert()
    digests = set()
    for i in range(20):
        save_weights(model, tmp_path / f"w{i}.safetensors")
        digests.add(_digest(tmp_path / f"w{i}.safetensors"))
    assert len(digests) == 1


def test_tied_tensors_are_stored_once_and_tied_again_on_load(tmp_path: Path) -> None:
    model, _ = tiny_bert(seed=0)
    assert tied_names(model.state_dict()) == {
        "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    }
    save_weights(model, tmp_path / "w.safetensors")
    with safe_open(str(tmp_path / "w.safetensors"), "pt") as f:
        assert "cls.predictions.decoder.weight" not in f.keys()
        assert json.loads(f.metadata()["tied"])["cls.predictions.decoder.weight"] == "bert.embeddings.word_embeddings.weight"
    other, _ = tiny_bert(seed=1)
    load_weights(other, tmp_path / "w.safetensors")  # strict: nothing missing, nothing unexpected
    for name, tensor in model.state_dict().items():
        assert torch.equal(other.state_dict()[name], tensor), name


def test_a_slice_of_a_larger_tensor_is_refused_at_save_not_after_training(tmp_path: Path) -> None:
    # safetensors' load_model refuses it: refused when the first checkpoint is written instead
    model = torch.nn.Module()
    model.register_buffer("part", torch.zeros(10)[:5])
    with pytest.raises(RuntimeError, match=r"\['part'\]: no tensor covers its whole storage"):
        save_weights(model, tmp_path / "w.safetensors")
    assert not list(tmp_path.iterdir())  # nothing half-written
