"""ClickPrompt: PA-MLM, finetuning with the PLM, and CTR-only initialisation."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from models.clickprompt import ClickPrompt, init_ctr_only
from models.ctr import CTR_MODELS, build_ctr_model
from models.encoding import FieldInfo
from models.mlm import DecoderVocab
from models.prompt import PromptConfig, run_plm
from tests.tiny_plm import tiny_bert, tiny_roberta

TEXTS = [
    "User ID is 3. Gender is F. Film genre is Drama.",
    "User ID is 4. Gender is M. Film genre is Comedy.",
    "User ID is 5. Gender is F. Film genre is Action.",
    "User ID is 6. Gender is M.",
]


def _clickprompt(fields: list[FieldInfo], backbone: str = "dcnv2", family: str = "bert", **cfg: object) -> ClickPrompt:
    torch.manual_seed(0)
    ctr = build_ctr_model(backbone, fields, preset="smoke")
    plm, _ = tiny_bert() if family == "bert" else tiny_roberta()
    return ClickPrompt(ctr, plm, PromptConfig(n_prompts=3, hidden=16, **cfg))  # type: ignore[arg-type]


def _text(family: str = "bert") -> tuple[Tensor, Tensor]:
    _, tok = tiny_bert() if family == "bert" else tiny_roberta()
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def _mask_some(ids: Tensor) -> tuple[Tensor, Tensor]:
    """Mask token positions 2 and 4 (inside every text): (masked ids, labels with -100 elsewhere)."""
    mask_id = 4  # [MASK] / <mask> in the tiny vocabularies
    labels = torch.full_like(ids, -100)
    labels[:, [2, 4]] = ids[:, [2, 4]]
    masked = ids.clone()
    masked[:, [2, 4]] = mask_id
    return masked, labels


@pytest.mark.parametrize("backbone", sorted(CTR_MODELS))
@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_pa_mlm_loss_reaches_ctr_embeddings(ctr_fields, ctr_batch, backbone: str, family: str) -> None:
    """The loss PA-MLM trains on (``ClickPrompt.pa_mlm``, what ``stage_pretrain`` runs)."""
    model = _clickprompt(ctr_fields, backbone, family).eval()
    ids, attn = _text(family)
    masked, labels = _mask_some(ids)
    out = model.pa_mlm(ctr_batch, masked, attn, labels)
    prompts, _ = model.prompts(ctr_batch)
    logits = run_plm(model.plm, masked, attn, prompts).logits  # (B, T, vocab) the whole MLM head
    expected = torch.nn.functional.cross_entropy(logits[:, [2, 4]].reshape(-1, logits.shape[-1]), labels[:, [2, 4]].reshape(-1))
    torch.testing.assert_close(out.loss, expected)
    assert torch.equal(out.true, labels[:, [2, 4]].reshape(-1))
    out.loss.backward()
    user_grad = model.ctr_model.embedding.tables["user_id"].weight.grad
    assert user_grad[ctr_batch["user_id"]].abs().sum() > 0  # the rows this batch used
    assert user_grad[0].abs().sum() == 0  # PAD row untouched
    assert model.plm.base_model.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert model.a.grad is None and all(p.grad is None for p in model.plm_head.parameters())


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_restricted_decoder_trains_on_the_same_logits(ctr_fields, ctr_batch, family: str) -> None:
    model = _clickprompt(ctr_fields, family=family).eval()
    ids, attn = _text(family)
    masked, labels = _mask_some(ids)
    _, tok = tiny_bert() if family == "bert" else tiny_roberta()
    full = model.pa_mlm(ctr_batch, masked, attn, labels)
    model.decoder_vocab = DecoderVocab.from_texts(ids, attn, tok.all_special_ids, len(tok))
    restricted = model.pa_mlm(ctr_batch, masked, attn, labels)
    assert torch.equal(restricted.true, full.true) and restricted.loss < full.loss
    restricted.loss.backward()
    assert model.ctr_model.embedding.tables["user_id"].weight.grad.abs().sum() > 0
    word_grad = model.plm.base_model.embeddings.word_embeddings.weight.grad  # tied to the decoder
    outside = ~torch.isin(torch.arange(len(tok)), model.decoder_vocab.ids)
    assert outside.any() and word_grad[outside].abs().sum() == 0  # the decoder scored none of those rows
    assert word_grad[model.decoder_vocab.ids].abs().sum() > 0


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_zero_prompts_give_plain_lm_and_no_ctr_gradient(ctr_fields, ctr_batch, family: str) -> None:
    model = _clickprompt(ctr_fields, family=family).eval()
    ids, attn = _text(family)
    masked, labels = _mask_some(ids)
    plain = model.plm(input_ids=masked, attention_mask=attn).logits[:, [2, 4]].reshape(-1, model.plm.config.vocab_size)
    out = model.pa_mlm(ctr_batch, masked, attn, labels, zero_prompts=True)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(plain, labels[:, [2, 4]].reshape(-1)),
                               atol=1e-6, rtol=0.0)
    assert torch.equal(out.pred, plain.argmax(-1))
    assert abs(model.pa_mlm(ctr_batch, masked, attn, labels).loss.item() - out.loss.item()) > 1e-4
    out.loss.backward()
    grad = model.ctr_model.embedding.tables["user_id"].weight.grad
    assert grad is None or grad.abs().sum() == 0


def test_pa_mlm_with_no_masked_tokens(ctr_fields, ctr_batch) -> None:
    model = _clickprompt(ctr_fields).eval()
    ids, attn = _text()
    loss = model.pa_mlm(ctr_batch, ids, attn, torch.full_like(ids, -100)).loss
    assert loss.item() == 0.0 and loss.requires_grad


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_ctr_mixing_weight_starts_at_half_and_learns(ctr_fields, ctr_batch, pooling: str) -> None:
    model = _clickprompt(ctr_fields, pooling=pooling).eval()
    ids, attn = _text()
    assert isinstance(model.a, torch.nn.Parameter) and model.a.item() == 0.5
    parts = model.ctr_parts(ctr_batch, ids, attn)
    torch.testing.assert_close(parts.logit, 0.5 * parts.lm_logit + 0.5 * parts.ctr_logit)
    torch.testing.assert_close(parts.ctr_logit, model.ctr_model(ctr_batch).logit)
    logit = model.ctr(ctr_batch, ids, attn)
    assert logit.shape == (len(TEXTS),)
    torch.nn.functional.binary_cross_entropy_with_logits(logit, torch.tensor([1.0, 0.0, 1.0, 0.0])).backward()
    expected_a_grad = ((parts.lm_logit - parts.ctr_logit) * (torch.sigmoid(logit) - torch.tensor([1.0, 0.0, 1.0, 0.0]))).mean()
    torch.testing.assert_close(model.a.grad, expected_a_grad.detach())
    assert model.a.grad.abs() > 0 and model.plm_head.weight.grad.abs().sum() > 0
    assert model.ctr_model.head.weight.grad.abs().sum() > 0


def test_parameter_groups_are_disjoint_and_complete(ctr_fields) -> None:
    model = _clickprompt(ctr_fields)
    groups = model.parameter_groups()
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}


def test_input_only_clickprompt_runs_and_differs(ctr_fields, ctr_batch) -> None:
    model = _clickprompt(ctr_fields, input_only=True).eval()
    ids, attn = _text()
    assert model.prompt.proj.out_features == 3 * 32  # K soft tokens of hidden size
    masked, labels = _mask_some(ids)
    out = model.pa_mlm(ctr_batch, masked, attn, labels)
    out.loss.backward()
    assert model.ctr_model.embedding.tables["gender"].weight.grad.abs().sum() > 0
    plain = model.plm(input_ids=masked, attention_mask=attn).logits
    prompts, _ = model.prompts(ctr_batch)
    assert (run_plm(model.plm, masked, attn, prompts).logits - plain).abs().max() > 1e-4


@pytest.mark.parametrize("backbone", ["dcnv2", "autoint", "dnn"])
def test_ctr_only_init_matches_backbone_and_takes_pretrained_weights(ctr_fields, ctr_batch, backbone: str) -> None:
    model = _clickprompt(ctr_fields, backbone)
    ids, attn = _text()
    masked, labels = _mask_some(ids)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    model.pa_mlm(ctr_batch, masked, attn, labels).loss.backward()
    opt.step()
    state = model.state_dict()

    torch.manual_seed(1)
    untouched = build_ctr_model(backbone, ctr_fields, preset="smoke")
    ctr_only = init_ctr_only(backbone, ctr_fields, None, state, preset="smoke")
    assert type(ctr_only) is type(untouched)
    assert {k: v.shape for k, v in ctr_only.state_dict().items()} == {k: v.shape for k, v in untouched.state_dict().items()}
    assert [n for n, _ in ctr_only.named_parameters()] == [n for n, _ in untouched.named_parameters()]

    for name, table in ctr_only.embedding.tables.items():
        pretrained = state[f"ctr_model.embedding.tables.{name}.weight"]
        assert torch.equal(table.weight, pretrained)
        assert not torch.equal(pretrained, untouched.embedding.tables[name].weight)
    assert not torch.equal(ctr_only.head.weight, model.ctr_model.head.weight)
    assert set(model.ctr_only_state_dict()) == set(untouched.state_dict()) - {"head.weight", "head.bias"}
    ctr_only.eval(), model.eval()
    torch.testing.assert_close(ctr_only(ctr_batch).h, model.ctr_model(ctr_batch).h)  # same interaction weights


def test_ctr_only_init_rejects_a_different_backbone(ctr_fields) -> None:
    state = _clickprompt(ctr_fields, "dcnv2").state_dict()
    with pytest.raises(ValueError, match="does not match"):
        init_ctr_only("dnn", ctr_fields, None, state, preset="smoke")


def test_no_prompts_ablation_mixes_plain_lm_and_ctr_logits(ctr_fields, ctr_batch) -> None:
    from models.prompt import pool, run_plm

    model = _clickprompt(ctr_fields).eval()
    ids, attn = _text()
    with_prompts = model.ctr_parts(ctr_batch, ids, attn).lm_logit
    model.use_prompts = False
    plain = model.ctr_parts(ctr_batch, ids, attn).lm_logit
    hidden = run_plm(model.plm, ids, attn, None, with_logits=False).last_hidden_state
    torch.testing.assert_close(plain, model.plm_head(pool(hidden, attn, "cls")).squeeze(-1))
    assert not torch.allclose(plain, with_prompts)
