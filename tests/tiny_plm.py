"""Tiny random BERT / RoBERTa masked LMs with matching WordPiece tokenizers, built offline: what
the model tests prove the prompt mechanism on (``models.plm`` loads the real ones)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import (
    BertConfig,
    BertForMaskedLM,
    PreTrainedTokenizerFast,
    RobertaConfig,
    RobertaForMaskedLM,
)

from models.plm import Family

_TINY_WORDS = (
    "user id is gender age job zipcode movie title film genre f m the of and a in "
    "drama comedy action thriller romance children animation horror sci-fi war"
).split()
_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"
_PUNCT = ".,'-():&!?/"


@dataclass(frozen=True)
class _Specials:
    pad: str
    unk: str
    cls: str
    sep: str
    mask: str

    def in_id_order(self, family: Family) -> list[str]:
        # ids follow each family's convention: BERT pad=0; RoBERTa <s>=0, <pad>=1, </s>=2
        if family == "bert":
            return [self.pad, self.unk, self.cls, self.sep, self.mask]
        return [self.cls, self.pad, self.sep, self.unk, self.mask]


_BERT_SPECIALS = _Specials(pad="[PAD]", unk="[UNK]", cls="[CLS]", sep="[SEP]", mask="[MASK]")
_ROBERTA_SPECIALS = _Specials(pad="<pad>", unk="<unk>", cls="<s>", sep="</s>", mask="<mask>")


def _tiny_vocab(family: Family, specials: _Specials) -> dict[str, int]:
    tokens = specials.in_id_order(family) + _TINY_WORDS + list(_CHARS) + [f"##{c}" for c in _CHARS] + list(_PUNCT)
    return {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}


def tiny_tokenizer(family: Family) -> PreTrainedTokenizerFast:
    """Lower-casing WordPiece tokenizer over a ~130-token vocabulary, with ``family``'s special tokens.

    Any lower-case ASCII word is covered (single characters and ``##`` continuations).
    """
    specials = _BERT_SPECIALS if family == "bert" else _ROBERTA_SPECIALS
    vocab = _tiny_vocab(family, specials)
    tok = Tokenizer(models.WordPiece(vocab, unk_token=specials.unk, continuing_subword_prefix="##"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    cls, sep = specials.cls, specials.sep
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=specials.pad,
        unk_token=specials.unk,
        cls_token=specials.cls,
        sep_token=specials.sep,
        mask_token=specials.mask,
        bos_token=specials.cls if family == "roberta" else None,
        eos_token=specials.sep if family == "roberta" else None,
        model_max_length=64,
    )


def _tiny_dims(vocab_size: int) -> dict[str, Any]:
    return {
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    }


def tiny_bert(seed: int = 0) -> tuple[BertForMaskedLM, PreTrainedTokenizerFast]:
    """Random 2-layer, 32-hidden, 2-head BertForMaskedLM + matching tokenizer (eval mode)."""
    tokenizer = tiny_tokenizer("bert")
    config = BertConfig(
        **_tiny_dims(len(tokenizer)), max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = BertForMaskedLM(config)
    return model.eval(), tokenizer


def tiny_roberta(seed: int = 0) -> tuple[RobertaForMaskedLM, PreTrainedTokenizerFast]:
    """Random 2-layer, 32-hidden, 2-head RobertaForMaskedLM + matching tokenizer (eval mode)."""
    tokenizer = tiny_tokenizer("roberta")
    config = RobertaConfig(
        **_tiny_dims(len(tokenizer)),
        max_position_embeddings=64 + tokenizer.pad_token_id + 1,  # RoBERTa positions start after pad
        type_vocab_size=1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = RobertaForMaskedLM(config)
    return model.eval(), tokenizer
