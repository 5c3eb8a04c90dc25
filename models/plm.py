"""Pretrained masked language models (BERT and RoBERTa families): loading, facts, tiny test models.

``load_plm`` takes a local folder (config.json, weights, tokenizer files) or a hub name (hub
names need network). Tiny random models for tests live in ``tests/tiny_plm.py``.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, cast

import torch
from torch import Tensor, nn
from transformers import (
    AutoModelForMaskedLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
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


@contextlib.contextmanager
def _from_hub(name_or_path: str | Path):
    """A ``Path`` must be a folder (it never falls back to the hub); a name that is no folder here goes
    to the model hub, and where that fails (offline, the project's default, or unreachable), one line
    says where a PLM can come from instead of transformers' trace."""
    if isinstance(name_or_path, Path) and not name_or_path.is_dir():
        raise FileNotFoundError(f"no model folder at {name_or_path}")
    if Path(name_or_path).expanduser().is_dir():
        yield
        return
    name = str(name_or_path)
    try:
        yield
    except OSError as exc:
        if name.startswith(("/", "~", ".")):  # meant as a folder (a hub name is "name" or "org/name")
            raise FileNotFoundError(f"no model folder at {name}: point the config's plm at a model folder "
                                    "(`--set plm=FOLDER`)") from exc
        raise FileNotFoundError(
            f"PLM {name!r} is not a folder here, and the model hub did not give it "
            f"({str(exc).splitlines()[0]}): fetch it into the project if the project ships it (`clickprompt plm "
            f"fetch {name}`; it lists the ones it knows), point the config's plm at a model folder "
            "(`--set plm=FOLDER`), or, for a training bundle, export it with --with-plm") from exc


def load_plm(
    name_or_path: str | Path, allow_missing_keys: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A BERT/RoBERTa-family masked LM and its tokenizer from a local folder or a hub name.

    A ``Path`` must exist (it never falls back to the hub). Weights missing from the checkpoint
    (e.g. an untrained MLM head) raise unless ``allow_missing_keys``. Returned in eval mode.
    """
    source = str(name_or_path)
    with _from_hub(name_or_path):
        model, loading = AutoModelForMaskedLM.from_pretrained(source, output_loading_info=True)
    plm_family(model)
    missing = sorted(loading["missing_keys"])
    head = _MLM_HEAD_ATTR[plm_family(model)] + "."
    if missing and all(k.startswith(head) for k in missing):
        # e.g. all-MiniLM-L6-v2: an encoder checkpoint whose MLM head transform starts untrained
        log.warning("%s: MLM head weights start untrained: %s", source, missing)
    elif missing and not allow_missing_keys:
        raise ValueError(f"{source}: weights missing from the checkpoint: {missing}")
    return model.eval(), load_tokenizer(source)


def load_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer of a PLM folder or hub name (without loading its weights)."""
    with _from_hub(name_or_path):
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
    if tokenizer.mask_token_id is None or tokenizer.pad_token_id is None:
        raise ValueError(f"{name_or_path}: the tokenizer needs a mask and a pad token for masked LM training")
    return tokenizer
