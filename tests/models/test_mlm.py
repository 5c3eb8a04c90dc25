"""Masked-LM pieces: BERT masking, the restricted decoder vocabulary, the MLM loss at the labels."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.mlm import IGNORE_INDEX, DecoderVocab, TokenMasker, mask_tokens, mlm_at_labels, mlm_logits
from models.plm import mlm_head_parts, mlm_parts
from tests.tiny_plm import tiny_bert, tiny_roberta

TEXTS = ["User ID is 3. Gender is F. Film genre is Drama.", "User ID is 14. Gender is M. Film genre is comedy."]


def test_mask_tokens_rates_and_never_specials_or_padding():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 1000, (400, 50))
    ids[:, 0], ids[:, -1] = 1, 2  # [CLS] / [SEP]-like specials
    attn = torch.ones_like(ids)
    attn[:, 40:] = 0  # padding
    ids[:, 40:] = 0
    masked, labels = mask_tokens(ids, attn, torch.tensor([0, 1, 2, 3]), mask_id=3, vocab_size=1000, prob=0.15, generator=g)
    selected = labels != IGNORE_INDEX
    eligible = 400 * 38
    assert abs(selected.sum().item() / eligible - 0.15) < 0.01
    assert not selected[:, 0].any() and not selected[:, 40:].any()
    assert torch.equal(labels[selected], ids[selected])
    share_mask = (masked[selected] == 3).float().mean().item()
    share_kept = (masked[selected] == ids[selected]).float().mean().item()
    assert abs(share_mask - 0.8) < 0.03 and abs(share_kept - 0.1) < 0.03
    assert torch.equal(masked[~selected], ids[~selected])


def test_full_vocabulary_masking_draws_random_tokens_from_the_whole_vocabulary():
    """candidates=None is the masking before the restricted decoder existed: the same generator
    calls, so the same masks and random tokens for the same seed."""
    ids = torch.randint(10, 1000, (64, 30), generator=torch.Generator().manual_seed(1))
    attn = torch.ones_like(ids)
    specials = torch.tensor([0, 1, 2, 3])
    masked, labels = mask_tokens(ids, attn, specials, 3, 1000, 0.15, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)  # replay: selection, 80/10/10 roll, random tokens
    selected = torch.rand(ids.shape, generator=g) < 0.15
    roll = torch.rand(ids.shape, generator=g)
    random_tokens = torch.randint(1000, ids.shape, generator=g)
    to_random = selected & (roll >= 0.8) & (roll < 0.9)
    assert torch.equal(labels != IGNORE_INDEX, selected)
    assert torch.equal(masked[to_random], random_tokens[to_random])


def test_restricted_masking_keeps_targets_and_random_tokens_inside_the_vocabulary():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 1000, (300, 40), generator=g)
    attn = torch.ones_like(ids)
    candidates = torch.arange(10, 600)  # tokens 600..999 lie outside the decoder
    masked, labels = mask_tokens(ids, attn, torch.tensor([0, 1, 2, 3]), 3, 1000, 0.15, g, candidates)
    selected = labels != IGNORE_INDEX
    assert selected.any() and bool(torch.isin(labels[selected], candidates).all())
    assert not selected[ids >= 600].any()  # never a target outside
    inside = ids < 600
    assert abs(selected[inside].float().mean().item() - 0.15) < 0.01  # the rate over eligible tokens holds
    replaced = selected & (masked != 3) & (masked != ids)
    assert replaced.sum() > 50 and bool(torch.isin(masked[replaced], candidates).all())


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_head_parts_compose_to_the_mlm_head(family: str):
    plm, _ = tiny_bert() if family == "bert" else tiny_roberta()
    hidden = torch.randn(7, plm.config.hidden_size)
    transform, decoder = mlm_head_parts(plm)
    torch.testing.assert_close(decoder(transform(hidden)), mlm_parts(plm)[1](hidden), atol=0, rtol=0)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_restricted_logits_equal_full_logits_at_those_ids(family: str):
    plm, tok = tiny_bert() if family == "bert" else tiny_roberta()
    torch.nn.init.normal_(mlm_head_parts(plm)[1].bias)  # a nonzero bias, so the gather of it is checked too
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    vocab = DecoderVocab.from_texts(enc["input_ids"], enc["attention_mask"], tok.all_special_ids, len(tok))
    assert 10 < len(vocab) < len(tok) and not vocab.full
    assert set(tok.all_special_ids) <= set(vocab.ids.tolist())
    assert set(enc["input_ids"][enc["attention_mask"].bool()].tolist()) <= set(vocab.ids.tolist())
    hidden = torch.randn(9, plm.config.hidden_size)
    full = mlm_logits(plm, hidden)
    assert full.shape == (9, len(tok))
    torch.testing.assert_close(mlm_logits(plm, hidden, vocab), full[:, vocab.ids], atol=1e-5, rtol=1e-5)


def test_mlm_loss_full_and_restricted():
    """full: exactly today's loss (cross-entropy of the plain MLM head over the vocabulary at the
    labels); restricted: the same logits' softmax over the decoder's ids, predictions mapped back."""
    plm, tok = tiny_bert()
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    vocab = DecoderVocab.from_texts(enc["input_ids"], enc["attention_mask"], tok.all_special_ids, len(tok))
    masker = TokenMasker(tok, 0.3, seed=0, vocab=vocab)
    batch = masker({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    labels = batch["mlm_labels"]
    hidden = torch.randn(*labels.shape, plm.config.hidden_size)
    sel = labels != IGNORE_INDEX
    logits = mlm_parts(plm)[1](hidden[sel])  # (M, vocab) the head as transformers runs it
    full = mlm_at_labels(plm, hidden, labels)
    assert full.loss.item() == F.cross_entropy(logits, labels[sel]).item()
    assert torch.equal(full.pred, logits.argmax(-1))
    restricted = mlm_at_labels(plm, hidden, labels, vocab)
    local = vocab.lookup()[labels[sel]]
    torch.testing.assert_close(restricted.loss, F.cross_entropy(logits[:, vocab.ids], local), atol=1e-5, rtol=1e-5)
    assert torch.equal(restricted.pred, vocab.ids[logits[:, vocab.ids].argmax(-1)])
    assert restricted.loss < full.loss  # the softmax runs over fewer rows
    bad = labels.clone()
    bad[sel.nonzero()[0][0], sel.nonzero()[0][1]] = int(torch.isin(torch.arange(len(tok)), vocab.ids, invert=True).nonzero()[0])
    with pytest.raises(ValueError, match="outside the decoder vocabulary"):
        mlm_at_labels(plm, hidden, bad, vocab)


def test_decoder_vocab_round_trips_and_rejects_a_tampered_file(tmp_path):
    _, tok = tiny_bert()
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    vocab = DecoderVocab.from_texts(enc["input_ids"], enc["attention_mask"], tok.all_special_ids, len(tok))
    vocab.save(tmp_path / "v.json")
    back = DecoderVocab.load(tmp_path / "v.json")
    assert torch.equal(back.ids, vocab.ids) and back.vocab_size == len(tok) and back.digest == vocab.digest
    text = (tmp_path / "v.json").read_text().replace('"ids": [0,', '"ids": [1,').replace('"ids": [0, ', '"ids": [1, ')
    (tmp_path / "v.json").write_text(text)
    with pytest.raises(ValueError, match="does not match its digest"):
        DecoderVocab.load(tmp_path / "v.json")
