"""PLM loading and the tiny offline test models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.plm import load_plm, mlm_parts, plm_info, text_position_ids
from tests.tiny_plm import tiny_bert, tiny_roberta

REPO = Path(__file__).resolve().parents[2]
REAL_PLMS = sorted(p.parent for p in (REPO / "data" / "plms").glob("*/config.json"))


@pytest.mark.parametrize("build", [tiny_bert, tiny_roberta])
def test_tiny_models_and_tokenizers_match(build) -> None:
    model, tok = build()
    info = plm_info(model)
    assert (info.n_layers, info.n_heads, info.head_dim, info.hidden_size) == (2, 2, 16, 32)
    assert info.vocab_size == len(tok) and info.pad_token_id == tok.pad_token_id
    enc = tok(["User ID is 1. Film genre is Drama."], return_tensors="pt")
    tokens = tok.convert_ids_to_tokens(enc["input_ids"][0])
    assert tokens[0] == tok.cls_token and tokens[-1] == tok.sep_token
    assert tok.unk_token_id not in enc["input_ids"][0]
    encoder, head = mlm_parts(model)
    assert encoder is model.base_model and head is (model.cls if info.family == "bert" else model.lm_head)


def test_tiny_models_are_seeded_and_leave_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a, _ = tiny_bert(seed=1)
    assert torch.rand(1) == expected
    b, _ = tiny_bert(seed=1)
    c, _ = tiny_bert(seed=2)
    w = "bert.embeddings.word_embeddings.weight"
    assert torch.equal(a.state_dict()[w], b.state_dict()[w]) and not torch.equal(a.state_dict()[w], c.state_dict()[w])


def test_roberta_position_ids_follow_transformers_rule() -> None:
    model, tok = tiny_roberta()
    enc = tok(["User ID is 1.", "Gender is F. Age is 25."], padding=True, return_tensors="pt")
    expected = model.roberta.embeddings.create_position_ids_from_input_ids(enc["input_ids"], tok.pad_token_id)
    assert torch.equal(text_position_ids(enc["input_ids"], plm_info(model)), expected)
    assert text_position_ids(enc["input_ids"], plm_info(model))[0, 0] == tok.pad_token_id + 1


@pytest.mark.parametrize("build", [tiny_bert, tiny_roberta])
def test_load_plm_roundtrip_from_folder(build, tmp_path: Path) -> None:
    model, tok = build()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, loaded_tok = load_plm(tmp_path)
    assert type(loaded) is type(model) and not loaded.training
    enc = tok(["Movie ID is 7."], return_tensors="pt")
    assert loaded_tok(["Movie ID is 7."], return_tensors="pt")["input_ids"].tolist() == enc["input_ids"].tolist()
    torch.testing.assert_close(loaded(**enc).logits, model(**enc).logits, atol=0, rtol=0)


def test_load_plm_rejects_missing_path_and_missing_encoder_weights(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    with pytest.raises(FileNotFoundError):
        load_plm(tmp_path / "nope")
    model, tok = tiny_bert()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    state = load_file(str(weights))
    del state["bert.encoder.layer.0.attention.self.query.weight"]
    save_file(state, str(weights), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="missing.*layer.0.attention.self.query"):
        load_plm(tmp_path)


def test_encoder_only_checkpoint_loads_with_an_untrained_mlm_head(tmp_path: Path, caplog) -> None:
    """Like all-MiniLM-L6-v2: no MLM head transform in the checkpoint; it starts untrained."""
    model, tok = tiny_bert()
    model.bert.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, _ = load_plm(tmp_path)
    assert "MLM head weights start untrained" in caplog.text
    torch.testing.assert_close(loaded.bert.embeddings.word_embeddings.weight, model.bert.embeddings.word_embeddings.weight)


@pytest.mark.skipif(not REAL_PLMS, reason="no pretrained PLM under data/plms/")
@pytest.mark.parametrize("folder", REAL_PLMS, ids=lambda p: p.name)
def test_real_plm_loads_without_missing_keys(folder: Path) -> None:
    model, tok = load_plm(folder)  # raises on missing keys
    info = plm_info(model)
    enc = tok(["User ID is 1. Gender is F."], return_tensors="pt")
    assert model(**enc).logits.shape == (1, enc["input_ids"].shape[1], info.vocab_size)


def test_a_plm_that_is_no_folder_and_not_on_the_hub_is_one_line_naming_where_to_get_it(monkeypatch) -> None:
    from models.plm import load_tokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the project's default: no hub access
    with pytest.raises(FileNotFoundError) as caught:
        load_plm("no-such-plm-here")
    message = str(caught.value)
    assert message.startswith("PLM 'no-such-plm-here' is not a folder here, and the model hub did not give it (")
    assert "`clickprompt plm fetch no-such-plm-here`" in message and "--with-plm" in message
    with pytest.raises(FileNotFoundError, match="is not a folder here, and the model hub did not give it"):
        load_tokenizer("org/no-such-plm")  # a hub name may hold one slash
    with pytest.raises(FileNotFoundError, match=r"^no model folder at \./nowhere/bert: point the config's plm at"):
        load_tokenizer("./nowhere/bert")  # meant as a folder: nothing to fetch


def test_a_bundle_without_its_plm_takes_the_projects_fetched_one(tmp_path: Path, monkeypatch) -> None:
    """Exported without --with-plm: the config's PLM as this project home has it, else its name."""
    import json

    from models.train.bundle import BUNDLE_FILE, Bundle
    from models.train.config import build_config

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / BUNDLE_FILE).write_text(json.dumps({"training_set": {"manifest_hash": "ab" * 32}}))
    cfg = build_config("smoke")
    home = tmp_path / "home"
    monkeypatch.setenv("CLICKPROMPT_HOME", str(home))
    assert Bundle(bundle).plm_source(cfg) == cfg.plm  # nothing fetched here: the name (and load_plm says what to do)
    (home / "data" / "plms" / cfg.plm).mkdir(parents=True)
    assert Bundle(bundle).plm_source(cfg) == home / "data" / "plms" / cfg.plm
    (bundle / "plm").mkdir()
    assert Bundle(bundle).plm_source(cfg) == bundle / "plm"  # the bundle's own comes first
