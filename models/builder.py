"""The one place models are built from a run's config, and the score functions every caller uses.

Training (``models.train.run``), as-of and online scoring (``serving.scoring``) and the benchmarks
build models here, so a registered model is rebuilt exactly as it was trained: the backbone from
``backbone`` / ``backbone_config`` / ``backbone_preset`` and the encoder's fields, ClickPrompt from
the backbone, the PLM and ``prompt_config(cfg)``. The language-model stack (transformers) is
imported only when a model with a PLM is built, so serving a CTR-only model never loads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from models.ctr import CTRModel, build_ctr_model
from models.encoding import FieldInfo
from models.train.config import TrainConfig
from models.train.stages import SERVABLE_STAGES, serving_refusal

if TYPE_CHECKING:
    from models.alt import AltModel
    from models.clickprompt import ClickPrompt
    from models.mlm import DecoderVocab
    from models.prompt import PromptConfig
    from models.text_ctr import JointCTR, TextCTR

# Stages whose model is the plain backbone (what the platform serves by default, no LM).
CTR_ONLY_STAGES = SERVABLE_STAGES


def new_backbone(cfg: TrainConfig, fields: list[FieldInfo]) -> CTRModel:
    return build_ctr_model(cfg.backbone, fields, cfg.backbone_config, cfg.backbone_preset)


def prompt_config(cfg: TrainConfig) -> "PromptConfig":
    """The prompt generator's settings from the run config (``TrainConfig.prompt`` + pooling)."""
    from models.prompt import PromptConfig

    p = cfg.prompt
    return PromptConfig(n_prompts=p.n_prompts, hidden=p.hidden, input_only=p.input_only, pooling=cfg.pooling)


def new_clickprompt(cfg: TrainConfig, fields: list[FieldInfo], plm_source: Path | str,
                    decoder_vocab: "DecoderVocab | None" = None) -> "ClickPrompt":
    from models.clickprompt import ClickPrompt
    from models.plm import load_plm

    plm, _ = load_plm(plm_source)
    model = ClickPrompt(new_backbone(cfg, fields), plm, prompt_config(cfg), decoder_vocab, cfg.head)
    model.use_prompts = not cfg.prompt.disabled
    return model


def new_alt(cfg: TrainConfig, fields: list[FieldInfo], plm_source: Path | str,
            decoder_vocab: "DecoderVocab | None" = None) -> "AltModel":
    from models.alt import AltModel
    from models.plm import load_plm

    plm, _ = load_plm(plm_source)
    return AltModel(new_backbone(cfg, fields), plm, prompt_config(cfg), alt_objective(cfg), decoder_vocab)


def alt_objective(cfg: TrainConfig):
    """The ALT options a method trains with: ``cfg.alt`` for alt; ctrl keeps the contrastive loss only."""
    if cfg.method == "ctrl":
        return cfg.alt.model_copy(update={"mlm_weight": 0.0, "mtm_weight": 0.0, "contrastive_weight": 1.0})
    return cfg.alt


def serving_model(cfg: TrainConfig, fields: list[FieldInfo], stage: str, plm_source: Path | str) -> nn.Module:
    """The model a registered stage is served with: the plain backbone for the CTR-only stages
    (no LM loaded), ClickPrompt with its PLM for finetune-with-lm (method clickprompt)."""
    if refusal := serving_refusal(stage, cfg.method):
        raise ValueError(refusal)
    if stage in CTR_ONLY_STAGES:
        return new_backbone(cfg, fields)
    return new_clickprompt(cfg, fields, plm_source)


# --- score functions: a model and a batch -> click logits (B,) -----------------------------------


def ctr_logit(model: nn.Module, batch: dict) -> torch.Tensor:
    return model(batch["x"]).logit


def fused_logit(model: "ClickPrompt", batch: dict) -> torch.Tensor:
    return model.ctr(batch["x"], batch["input_ids"], batch["attention_mask"])


def text_logit(model: "TextCTR", batch: dict) -> torch.Tensor:
    return model(batch["input_ids"], batch["attention_mask"])


def joint_logit(model: "JointCTR", batch: dict) -> torch.Tensor:
    return model(batch["x"], batch["input_ids"], batch["attention_mask"])


def serving_score_fn(stage: str):
    """The score function of a served stage."""
    return ctr_logit if stage in CTR_ONLY_STAGES else fused_logit
