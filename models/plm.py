"""Pretrained masked language models (BERT and RoBERTa families): loading, facts, tiny test models.

``load_plm`` takes a local folder (config.json, weights, tokenizer files) or a hub name (hub
names need network). ``tiny_bert`` / ``tiny_roberta`` build small random models with matching
WordPiece tokenizers entirely offline, for tests.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, cast

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from torch import Tensor, nn
from transformers import (
    AutoModelForMaskedLM,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    RobertaConfig,
    RobertaForMaskedLM,
)
from transformers.activations import gelu

log = logging.getLogger("clickprompt.plm")

Family = Literal["bert", "roberta"]
_FAMILIES: dict[str, Family] = {"bert": "bert", "roberta": "roberta"}  # config.model_type -> family
_MLM_HEAD_ATTR: dict[Family, str] = {"bert": "cls", "roberta": "lm_head"}  # where each family keeps its MLM head


@dataclass(frozen=True)
class PLMInfo:
    """The facts prompt fusion needs about a masked LM."""

    family: Family  # "bert" or "roberta": decides how text position ids are counted
    n_layers: int  # transformer layers L (one key/value prefix each)
    n_heads: int  # attention heads per layer
    head_dim: int  # hidden_size // n_heads
    hidden_size: int  # width of the hidden states
    pad_token_id: int  # padding id (RoBERTa counts positions from pad_token_id + 1)
    vocab_size: int  # rows of the word embedding / MLM output


def plm_family(model: PreTrainedModel) -> Family:
    """"bert" or "roberta"; any other architecture raises ValueError."""
    model_type = model.config.model_type
    if model_type not in _FAMILIES:
        raise ValueError(f"unsupported PLM type {model_type!r}; supported: {sorted(_FAMILIES)}")
    return _FAMILIES[model_type]


def plm_info(model: PreTrainedModel) -> PLMInfo:
    cfg = model.config
    return PLMInfo(
        family=plm_family(model),
        n_layers=cfg.num_hidden_layers,
        n_heads=cfg.num_attention_heads,
        head_dim=cfg.hidden_size // cfg.num_attention_heads,
        hidden_size=cfg.hidden_size,
        pad_token_id=cfg.pad_token_id,
        vocab_size=cfg.vocab_size,
    )


def mlm_parts(model: PreTrainedModel) -> tuple[PreTrainedModel, nn.Module]:
    """(encoder, MLM head) of a *ForMaskedLM: ``model.bert``/``model.cls`` or ``model.roberta``/``model.lm_head``.

    Running them separately gives the last hidden states (for pooling) and lets callers skip
    the vocabulary projection when they only need the hidden states.
    """
    encoder = cast(PreTrainedModel, model.base_model)
    return encoder, getattr(model, _MLM_HEAD_ATTR[plm_family(model)])


def mlm_head_parts(model: PreTrainedModel) -> tuple[Callable[[Tensor], Tensor], nn.Linear]:
    """(transform, decoder) of a *ForMaskedLM's MLM head: ``head(h) == decoder(transform(h))``.

    BERT: ``cls.predictions.transform`` (dense, activation, LayerNorm); RoBERTa: ``lm_head``'s dense,
    gelu and layer_norm. Split so a caller can score only some decoder rows (``models.mlm``).
    """
    head = mlm_parts(model)[1]
    if plm_family(model) == "bert":
        return head.predictions.transform, head.predictions.decoder

    def roberta_transform(h: Tensor) -> Tensor:
        return head.layer_norm(gelu(head.dense(h)))

    return roberta_transform, head.decoder


def text_position_ids(input_ids: Tensor, info: PLMInfo) -> Tensor:
    """Position ids the PLM would use for ``input_ids`` (B, T) with no prefix: (B, T).

    Passed explicitly when prompts are present: otherwise transformers shifts the text's
    positions by the prefix length K. BERT: 0..T-1. RoBERTa: pad_token_id + 1 + index for real
    tokens, pad_token_id for padding (transformers' own rule, counted on ``input_ids``).
    """
    if info.family == "bert":
        b, t = input_ids.shape
        return torch.arange(t, device=input_ids.device).expand(b, t)
    not_pad = input_ids.ne(info.pad_token_id).long()  # (B, T)
    return torch.cumsum(not_pad, dim=1) * not_pad + info.pad_token_id


def load_plm(
    name_or_path: str | Path, allow_missing_keys: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A BERT/RoBERTa-family masked LM and its tokenizer from a local folder or a hub name.

    A ``Path`` must exist (it never falls back to the hub). Weights missing from the checkpoint
    (e.g. an untrained MLM head) raise unless ``allow_missing_keys``. Returned in eval mode.
    """
    if isinstance(name_or_path, Path) and not name_or_path.is_dir():
        raise FileNotFoundError(f"no model folder at {name_or_path}")
    source = str(name_or_path)
    model, loading = AutoModelForMaskedLM.from_pretrained(source, output_loading_info=True)
    plm_family(model)
    missing = sorted(loading["missing_keys"])
    head = _MLM_HEAD_ATTR[plm_family(model)] + "."
    if missing and all(k.startswith(head) for k in missing):
        # e.g. all-MiniLM-L6-v2: an encoder checkpoint whose MLM head transform starts untrained
        log.warning("%s: MLM head weights start untrained: %s", source, missing)
    elif missing and not allow_missing_keys:
        raise ValueError(f"{source}: weights missing from the checkpoint: {missing}")
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.mask_token_id is None or tokenizer.pad_token_id is None:
        raise ValueError(f"{source}: the tokenizer needs a mask and a pad token for masked LM training")
    return model.eval(), tokenizer


# ---- tiny random models for tests -------------------------------------------------------------

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
