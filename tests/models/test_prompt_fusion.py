"""Prompt generator shapes and prompt fusion into tiny BERT / RoBERTa masked LMs."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerFast

from models.plm import plm_info
from models.prompt import InputPrompts, LayerPrompts, PromptConfig, PromptGenerator, pool, run_plm
from tests.tiny_plm import tiny_bert, tiny_roberta

TEXTS = ["User ID is 1. Gender is F. Film genre is Drama.", "User ID is 7. Gender is M."]  # 2nd is padded
H_DIM, K, D = 12, 3, 24
TIGHT = {"atol": 1e-6, "rtol": 0.0}


@pytest.fixture(params=["bert", "roberta"])
def lm(request: pytest.FixtureRequest) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    return tiny_bert() if request.param == "bert" else tiny_roberta()


def _generator(plm: PreTrainedModel, input_only: bool = False) -> PromptGenerator:
    torch.manual_seed(0)
    info = plm_info(plm)
    return PromptGenerator(H_DIM, info.n_layers, info.n_heads, info.head_dim, K, D, input_only)


def _encode(tok: PreTrainedTokenizerFast) -> tuple[Tensor, Tensor]:
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    assert (enc["attention_mask"] == 0).any()  # the batch exercises padding
    return enc["input_ids"], enc["attention_mask"]


def _plain(plm: PreTrainedModel, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    out = plm(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    return out.logits, out.hidden_states[-1]


def test_generator_per_layer_shapes_and_param_count(lm) -> None:
    plm, _ = lm
    gen = _generator(plm)
    prompts = gen(torch.randn(5, H_DIM))
    info = plm_info(plm)
    assert isinstance(prompts, LayerPrompts) and len(prompts.layers) == info.n_layers
    for key, value in prompts.layers:
        assert key.shape == value.shape == (5, info.n_heads, K, info.head_dim)
    out = info.n_layers * 2 * info.hidden_size * K
    assert gen.param_count() == (H_DIM * D + D) + (D * out + out)
    # PEFT layout: layer l's key is chunk 2l of the flat output, value chunk 2l + 1
    flat = gen.proj(gen.encoder(torch.ones(1, H_DIM))).view(1, K, info.n_layers * 2, info.n_heads, info.head_dim)
    layers = gen(torch.ones(1, H_DIM)).layers
    torch.testing.assert_close(layers[1][1][0, :, 2], flat[0, 2, 3])  # layer 1 value, prompt 2


def test_no_prompts_is_exactly_the_plain_lm(lm) -> None:
    plm, tok = lm
    ids, mask = _encode(tok)
    logits, hidden = _plain(plm, ids, mask)
    out = run_plm(plm, ids, mask, prompts=None)
    torch.testing.assert_close(out.logits, logits, atol=0.0, rtol=0.0)
    torch.testing.assert_close(out.last_hidden_state, hidden, atol=0.0, rtol=0.0)
    assert run_plm(plm, ids, mask, with_logits=False).logits is None


@pytest.mark.parametrize("input_only", [False, True])
def test_zero_masked_prompts_equal_the_plain_lm(lm, input_only: bool) -> None:
    plm, tok = lm
    ids, mask = _encode(tok)
    logits, hidden = _plain(plm, ids, mask)
    prompts = _generator(plm, input_only)(torch.randn(2, H_DIM))
    out = run_plm(plm, ids, mask, prompts, prompt_mask=torch.zeros(2, K, dtype=torch.long))
    torch.testing.assert_close(out.logits, logits, **TIGHT)
    torch.testing.assert_close(out.last_hidden_state, hidden, **TIGHT)


@pytest.mark.parametrize("input_only", [False, True])
def test_prompts_change_logits_and_shapes_stay_textual(lm, input_only: bool) -> None:
    plm, tok = lm
    ids, mask = _encode(tok)
    logits, _ = _plain(plm, ids, mask)
    gen = _generator(plm, input_only)
    prompts = gen(torch.randn(2, H_DIM))
    if input_only:
        assert isinstance(prompts, InputPrompts) and prompts.embeds.shape == (2, K, plm_info(plm).hidden_size)
    out = run_plm(plm, ids, mask, prompts)
    assert out.logits.shape == logits.shape and out.last_hidden_state.shape[:2] == ids.shape
    assert (out.logits - logits).abs().max() > 1e-4
    # different samples' h give different prompts, hence different outputs for the same text
    swapped = run_plm(plm, ids.flip(0), mask.flip(0), prompts)
    assert (swapped.logits.flip(0) - out.logits).abs().max() > 1e-5


def test_gradients_reach_every_layer_prefix_and_h(lm) -> None:
    plm, tok = lm
    ids, mask = _encode(tok)
    h = torch.randn(2, H_DIM, requires_grad=True)
    prompts = _generator(plm)(h)
    for key, value in prompts.layers:
        key.retain_grad()
        value.retain_grad()
    run_plm(plm, ids, mask, prompts).logits.pow(2).mean().backward()
    for key, value in prompts.layers:
        assert key.grad.abs().sum() > 0 and value.grad.abs().sum() > 0
    assert h.grad.abs().sum() > 0


def test_explicit_positions_are_needed(lm) -> None:
    """transformers shifts the text's positions by the prefix length unless position_ids are given."""
    plm, tok = lm
    ids, mask = _encode(tok)
    logits, _ = _plain(plm, ids, mask)
    prompts = _generator(plm)(torch.randn(2, H_DIM))
    cache = DynamicCache()
    for i, (key, value) in enumerate(prompts.layers):
        cache.update(key, value, i)
    zero = torch.cat([torch.zeros(2, K, dtype=mask.dtype), mask], dim=1)
    shifted = plm(input_ids=ids, attention_mask=zero, past_key_values=cache).logits
    assert (shifted - logits).abs().max() > 1e-4


def test_pooling() -> None:
    hidden = torch.arange(12.0).view(1, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0]])
    torch.testing.assert_close(pool(hidden, mask, "cls"), hidden[:, 0])
    torch.testing.assert_close(pool(hidden, mask, "mean"), hidden[:, :2].mean(1))


def test_prompt_config_rejects_unknown_keys_and_bad_values() -> None:
    assert PromptConfig.from_dict({"n_prompts": 4}).n_prompts == 4
    with pytest.raises(ValueError, match="n_promts"):
        PromptConfig.from_dict({"n_promts": 4})
    with pytest.raises(ValueError, match="pooling"):
        PromptConfig(pooling="max")  # type: ignore[arg-type]
