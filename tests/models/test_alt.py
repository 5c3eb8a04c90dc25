"""ALT / FLIP on tiny models: masking, the three pretraining losses, the finetuning models, the switch."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from models.alt import (
    AltMasker,
    AltModel,
    mask_features,
    mask_text_fields,
    mtm_fields,
    sample_candidates,
)
from models.alt_eval import alignment_counts, alignment_metrics
from models.builder import alt_objective
from models.clickprompt import init_ctr_only
from models.ctr import build_ctr_model
from models.encoding import MASK, FieldInfo
from models.prompt import PromptConfig
from models.text_ctr import JointCTR, TextCTR, load_prefixed
from models.train.config import AltOptions, ConfigError, load_config
from models.train.stages import CLICKPROMPT_STAGES, METHOD_STAGES, default_stages
from tests.tiny_plm import tiny_bert

FIELDS = [
    FieldInfo("user_id", "id", vocab_size=19),
    FieldInfo("gender", "categorical", vocab_size=5),
    FieldInfo("job", "categorical", vocab_size=8),
    FieldInfo("genres", "multi", vocab_size=9, max_len=6),
]
DISPLAY = {"user_id": "user id", "gender": "gender", "job": "job", "genres": "film genre"}
WORDS = {"gender": ["m", "f"], "job": ["writer", "doctor", "artist", "lawyer", "other"],
         "genres": ["drama", "comedy", "action", "war", "horror", "romance"]}
N_ROWS = 16
LOSSES = ("contrastive", "mlm", "mtm")


def _value(name: str, index: int) -> str:
    return str(index * 7) if name == "user_id" else WORDS[name][index - 3]


def make_batch(n: int = N_ROWS, seed: int = 0) -> dict:
    """Random rows of FIELDS and their text "user id is 21. gender is f. job is doctor. film genre is war.",
    with field_ids (B, T) from the tokenizer's character offsets, as models.data builds them."""
    g = torch.Generator().manual_seed(seed)
    genres = torch.zeros(n, 6, dtype=torch.long)
    genres[:, 0] = torch.randint(3, 9, (n,), generator=g)
    x = {"user_id": torch.randint(3, 19, (n,), generator=g), "gender": torch.randint(3, 5, (n,), generator=g),
         "job": torch.randint(3, 8, (n,), generator=g), "genres": genres}
    texts, spans = [], []
    for r in range(n):
        text, row_spans = "", []
        for j, f in enumerate(FIELDS):
            value = _value(f.name, int(x[f.name][r].reshape(-1)[0]))
            text += f"{DISPLAY[f.name]} is "
            row_spans.append((j, len(text), len(text) + len(value)))
            text += value + ". "
        texts.append(text.strip())
        spans.append(row_spans)
    _, tok = tiny_bert()
    enc = tok(texts, padding=True, return_tensors="pt", return_offsets_mapping=True)
    field_ids = torch.full(enc["input_ids"].shape, -1, dtype=torch.int8)
    for r in range(n):
        for t, (a, b) in enumerate(enc["offset_mapping"][r].tolist()):
            for j, start, end in spans[r]:
                if b > a and a >= start and b <= end:
                    field_ids[r, t] = j
    return {"x": x, "input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "field_ids": field_ids,
            "label": (x["job"] % 2).float()}


def only(loss: str, **kw: object) -> AltOptions:
    """Options with one loss on (weight 1) and the others off."""
    return AltOptions(**{f"{k}_weight": float(k == loss) for k in LOSSES}, n_negatives=5, proj_dim=32, **kw)  # type: ignore[arg-type]


def make_alt(opts: AltOptions, backbone: str = "dcnv2") -> AltModel:
    torch.manual_seed(0)
    plm, _ = tiny_bert()
    return AltModel(build_ctr_model(backbone, FIELDS, preset="smoke"), plm, PromptConfig(n_prompts=3, hidden=16), opts)


def mask_token_id() -> int:
    return tiny_bert()[1].mask_token_id


@pytest.fixture(scope="module")
def batch() -> dict:
    return make_batch()


# --- masking ---------------------------------------------------------------------------------


def test_text_masking_takes_whole_fields_and_never_template_words(batch) -> None:
    g = torch.Generator().manual_seed(0)
    masked, labels = mask_text_fields(batch["input_ids"], batch["field_ids"], len(FIELDS), 0.15, 4, g)
    hit = labels != -100  # (B, T)
    assert torch.equal(masked[hit], torch.full_like(masked[hit], 4))
    assert torch.equal(masked[~hit], batch["input_ids"][~hit]) and torch.equal(labels[hit], batch["input_ids"][hit])
    fids = batch["field_ids"]
    assert (fids[hit] >= 0).all()  # template words and specials stay
    for r in range(len(fids)):
        chosen = set(fids[r][hit[r]].tolist())
        assert len(chosen) == 1  # round(0.15 * 4 fields) -> at least one, here exactly one
        for f in chosen:  # ... and every token of that field's value
            assert hit[r][fids[r] == f].all()
    masked_half, labels_half = mask_text_fields(batch["input_ids"], fids, len(FIELDS), 0.5, 4, g)
    assert all(len(set(fids[r][labels_half[r] != -100].tolist())) == 2 for r in range(len(fids)))


def test_feature_masking_and_negative_sampling(batch) -> None:
    targets = mtm_fields(FIELDS)
    assert [f.name for f in targets] == ["user_id", "gender", "job"]  # multi-valued genres left out
    g = torch.Generator().manual_seed(0)
    x_masked, chosen = mask_features(batch["x"], targets, 0.15, g)
    assert chosen.shape == (N_ROWS, 3) and (chosen.sum(1) == 1).all()
    for j, f in enumerate(targets):
        assert (x_masked[f.name][chosen[:, j]] == MASK).all()
        assert torch.equal(x_masked[f.name][~chosen[:, j]], batch["x"][f.name][~chosen[:, j]])
    assert x_masked["genres"] is batch["x"]["genres"]

    true = batch["x"]["user_id"]
    cand = sample_candidates(true, 19, 25, g)  # 15 other known ids < 25: each once
    assert cand.shape == (N_ROWS, 16) and torch.equal(cand[:, 0], true)
    assert all(sorted(cand[r].tolist()) == list(range(3, 19)) for r in range(N_ROWS))
    cand = sample_candidates(true, 19, 5, g)  # sampled, never the true id, always a known id
    assert cand.shape == (N_ROWS, 6)
    assert (cand[:, 1:] != true[:, None]).all() and (cand[:, 1:] >= 3).all() and (cand < 19).all()


def test_masker_adds_each_view_only_when_its_loss_is_on(batch) -> None:
    full = AltMasker(FIELDS, mask_token_id(), AltOptions(n_negatives=5), seed=0)(batch)
    assert {"masked_ids", "mlm_labels", "x_masked", "mtm_mask", "mtm_candidates"} <= set(full)
    assert full["mtm_candidates"]["gender"].shape == (N_ROWS, 2)  # one other gender
    ctrl = AltMasker(FIELDS, mask_token_id(), only("contrastive"), seed=0)(batch)
    assert set(ctrl) == set(batch)
    again = AltMasker(FIELDS, mask_token_id(), AltOptions(n_negatives=5), seed=0)(batch)
    assert torch.equal(again["masked_ids"], full["masked_ids"])  # a fixed seed gives the same views


# --- the three losses --------------------------------------------------------------------------


@pytest.mark.parametrize("loss", LOSSES)
def test_each_loss_falls_on_a_fixed_batch(batch, loss: str) -> None:
    model = make_alt(only(loss)).train()
    masked = AltMasker(FIELDS, mask_token_id(), model.opts, seed=0)(batch)
    groups = model.parameter_groups()
    opt = torch.optim.AdamW([{"params": ps, "lr": 1e-3 if name == "plm" else 1e-2} for name, ps in groups.items()])
    losses = []
    for _ in range(40):
        out = model(masked)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    ratio = {"contrastive": 0.85, "mlm": 0.75, "mtm": 0.2}[loss]
    assert last < ratio * first, (loss, losses)


def test_losses_are_weighted_and_reach_the_other_side(batch) -> None:
    model = make_alt(AltOptions(contrastive_weight=0.5, mlm_weight=2.0, mtm_weight=1.0, n_negatives=5, proj_dim=32))
    out = model(AltMasker(FIELDS, mask_token_id(), model.opts, seed=0)(batch))
    assert out.contrastive is not None and out.mlm is not None and out.mtm is not None
    torch.testing.assert_close(out.loss, 0.5 * out.contrastive + 2.0 * out.mlm.loss + out.mtm.loss)
    assert out.retrieval_hits.shape == (N_ROWS,) and out.mtm.hits.shape == (N_ROWS,)  # one masked feature a row

    mlm_only = make_alt(only("mlm"))
    mlm_only(AltMasker(FIELDS, mask_token_id(), mlm_only.opts, seed=0)(batch)).loss.backward()
    assert mlm_only.ctr_model.embedding.tables["job"].weight.grad.abs().sum() > 0  # IDs help the LM: prefixes
    mtm_only = make_alt(only("mtm"))
    mtm_only(AltMasker(FIELDS, mask_token_id(), mtm_only.opts, seed=0)(batch)).loss.backward()
    assert mtm_only.plm.base_model.embeddings.word_embeddings.weight.grad.abs().sum() > 0  # text helps MTM
    assert mtm_only.ctr_model.embedding.tables["user_id"].weight.grad[MASK].abs().sum() > 0  # the MASK row learns


def test_modules_of_disabled_losses_are_not_built() -> None:
    ctrl = make_alt(only("contrastive"))
    assert ctrl.prompt is None and ctrl.mtm_head is None and ctrl.text_proj is not None
    groups = ctrl.parameter_groups()
    assert set(groups) == {"plm", "ctr", "text_proj", "ctr_proj"}
    full = make_alt(AltOptions())
    ids = [id(p) for ps in full.parameter_groups().values() for p in ps]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in full.parameters()}


def test_alignment_checks_compare_each_view_with_its_control(batch) -> None:
    model = make_alt(AltOptions(n_negatives=5, proj_dim=32)).eval()
    masked = AltMasker(FIELDS, mask_token_id(), model.opts, seed=0)(batch)
    metrics = alignment_metrics(alignment_counts(model, masked))
    for key in ("loss", "contrastive_loss", "retrieval_acc", "mlm_acc", "mlm_acc_zero_prompts", "mtm_acc",
                "mtm_acc_text_zeroed", "mtm_acc_text_shuffled", "mtm_chance"):
        assert 0 <= metrics[key] < 100, key
    assert metrics["masked_features"] == N_ROWS and metrics["retrieval_chance"] == pytest.approx(1 / N_ROWS)
    assert set(metrics["mtm_by_field"]) <= {"user_id", "gender", "job"}
    assert metrics["mtm_loss"] != metrics["mtm_loss_text_zeroed"]  # the text reaches MTM


# --- finetuning strategies ----------------------------------------------------------------------


def _trained_alt(batch: dict, opts: AltOptions, backbone: str = "dcnv2") -> AltModel:
    model = make_alt(opts, backbone)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    model(AltMasker(FIELDS, mask_token_id(), opts, seed=0)(batch)).loss.backward()
    opt.step()
    return model


@pytest.mark.parametrize("backbone", ["dcnv2", "autoint", "dnn"])
@pytest.mark.parametrize("loss", ["all", "contrastive"])
def test_ctr_only_strategy_is_exactly_the_backbone(batch, backbone: str, loss: str) -> None:
    opts = AltOptions(n_negatives=5, proj_dim=32) if loss == "all" else only("contrastive")
    state = _trained_alt(batch, opts, backbone).state_dict()
    untouched = build_ctr_model(backbone, FIELDS, preset="smoke")
    ctr_only = init_ctr_only(backbone, FIELDS, None, state, preset="smoke")
    assert type(ctr_only) is type(untouched)
    assert [(n, p.shape) for n, p in ctr_only.named_parameters()] == [(n, p.shape) for n, p in untouched.named_parameters()]
    assert {k: v.shape for k, v in ctr_only.state_dict().items()} == {k: v.shape for k, v in untouched.state_dict().items()}
    for name, table in ctr_only.embedding.tables.items():
        assert torch.equal(table.weight, state[f"ctr_model.embedding.tables.{name}.weight"])
    assert not torch.equal(ctr_only.head.weight, state["ctr_model.head.weight"])  # fresh head


def test_lm_only_strategy_loads_the_pretrained_lm_with_tied_weights(batch, tmp_path) -> None:
    from safetensors.torch import load_file

    from models.runtime import save_weights

    model = _trained_alt(batch, AltOptions(n_negatives=5, proj_dim=32))
    save_weights(model, tmp_path / "alt.safetensors")
    state = load_file(str(tmp_path / "alt.safetensors"))  # tied LM weights stored once
    plm, _ = tiny_bert(seed=3)
    load_prefixed(plm, state, "plm.")
    for name, value in model.plm.state_dict().items():
        torch.testing.assert_close(plm.state_dict()[name], value)
    text = TextCTR(plm).eval()
    logit = text(batch["input_ids"], batch["attention_mask"])
    assert logit.shape == (N_ROWS,)
    with pytest.raises(ValueError, match="does not match"):
        load_prefixed(tiny_bert()[0], {k: v for k, v in state.items() if "layer.1." not in k}, "plm.")
    assert set(text.parameter_groups()) == {"plm", "head"}


def test_joint_strategy_mixes_logits_with_a_learnable_weight(batch) -> None:
    torch.manual_seed(0)
    joint = JointCTR(build_ctr_model("dcnv2", FIELDS, preset="smoke"), TextCTR(tiny_bert()[0])).eval()
    assert joint.a.item() == 0.5
    parts = joint.parts(batch["x"], batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(parts.logit, 0.5 * parts.ctr_logit + 0.5 * parts.text_logit)
    y = batch["label"]
    torch.nn.functional.binary_cross_entropy_with_logits(parts.logit, y).backward()
    expected = ((parts.ctr_logit - parts.text_logit) * (torch.sigmoid(parts.logit) - y)).mean()
    torch.testing.assert_close(joint.a.grad, expected.detach())
    groups = joint.parameter_groups()
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in joint.parameters()}


# --- config and the method switch -----------------------------------------------------------------


def test_alt_options_are_typed_and_strict() -> None:
    cfg = load_config("smoke", {"method": "alt", "alt.temperature": 0.5, "alt.n_negatives": 10})
    assert cfg.alt.temperature == 0.5 and cfg.alt.n_negatives == 10
    with pytest.raises(ConfigError, match=r"alt.negatives: unknown setting; the settings of alt: .*\bn_negatives\b"):
        load_config("smoke", {"alt.negatives": 10})
    with pytest.raises(ValidationError):
        AltOptions(contrastive_weight=0, mlm_weight=0, mtm_weight=0)
    with pytest.raises(ValidationError):
        AltOptions(temperature=0)


def test_method_selects_objective_and_default_stages() -> None:
    assert default_stages("baseline") == ["baseline"]
    assert default_stages("clickprompt") == list(CLICKPROMPT_STAGES)
    assert default_stages("alt") == ["pretrain", "finetune-ctr-only", "finetune-lm-only", "finetune-with-lm"]
    assert default_stages("ctrl") == ["pretrain", "finetune-ctr-only"]
    assert default_stages("lm_only") == ["finetune-lm-only"]
    assert set(METHOD_STAGES) == {"baseline", "clickprompt", "alt", "ctrl", "lm_only"}
    with pytest.raises(ValueError, match="unknown method"):
        default_stages("flip")
    ctrl = alt_objective(load_config("smoke", {"method": "ctrl"}))
    assert (ctrl.contrastive_weight, ctrl.mlm_weight, ctrl.mtm_weight) == (1.0, 0.0, 0.0)
    alt = alt_objective(load_config("smoke", {"method": "alt", "alt.mtm_weight": 0.5}))
    assert alt.mtm_weight == 0.5 and alt.mlm_weight == 1.0


def test_cli_train_runs_the_pipeline_flow_with_the_methods_stages(paths, monkeypatch, capsys) -> None:
    """``clickprompt train`` is the pipeline flow without registering: the same gates, cache and run
    ids; the stages default to the method's inside the flow."""
    import cli
    import flows.train_pipeline as pipeline

    calls: list[dict] = []
    real = pipeline.train_pipeline

    class FakeFlow:
        def validate_parameters(self, params: dict) -> dict:
            return real.validate_parameters(params)

        def __call__(self, **params) -> dict:
            calls.append(params)
            stages = params["stages"] or default_stages(params["method"])
            return {"run_id": params["run_id"], "method": params["method"], "backbone": "dcnv2", "profile": "smoke",
                    "dataset": params["dataset"], "training_set": {}, "variants": {s: {"stage": s} for s in stages}}

    monkeypatch.setattr(pipeline, "train_pipeline", FakeFlow())
    assert cli.main(["train", "--profile", "smoke", "--method", "alt", "--run-id", "r1"]) == 0
    assert cli.main(["train", "--profile", "smoke", "--method", "ctrl", "--stages", "all", "--run-id", "r2"]) == 0
    assert cli.main(["train", "--profile", "smoke", "--method", "alt", "--stages", "pretrain", "--run-id", "r3",
                     "--plm", "minilm-l6"]) == 0
    assert [(c["method"], c["stages"], c["to_registry"]) for c in calls] == [
        ("alt", None, False), ("ctrl", None, False), ("alt", ["pretrain"], False)]
    assert calls[2]["overrides"] == {"plm": "minilm-l6"} and calls[0]["run_id"] == "r1"
    out = capsys.readouterr().out
    assert "finetune-lm-only" in out and "run r1: alt on dcnv2" in out
