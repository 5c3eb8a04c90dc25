"""ClickPrompt (Lin et al., WWW 2024): a CTR model generates soft prompts for a masked LM.

- ``pa_mlm``: PA-MLM pretraining. The CTR side sees the complete ID features; the PLM sees the
  masked text plus the prompts; cross-entropy on ``labels != -100``, the MLM head applied to
  the masked positions only and scoring the decoder vocabulary (``models.mlm.DecoderVocab``).
  Gradients flow back through the prompts into the CTR model's embedding and interaction layers.
- ``ctr``: finetuning with the PLM, ``a * lm_logit + (1 - a) * ctr_logit``.
- ``init_ctr_only``: finetuning without the PLM: the plain backbone, its embedding and
  interaction weights taken from a ClickPrompt state dict, a fresh output layer ``head``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from models.ctr import CTRModel, build_ctr_model
from models.encoding import FieldInfo
from models.mlm import DecoderVocab, MLMResult, mlm_at_labels
from models.plm import plm_info
from models.prompt import PromptConfig, PromptGenerator, Prompts, pool, run_plm
from models.text_ctr import click_head

CTR_PREFIX = "ctr_model."  # where the backbone's weights live in a ClickPrompt state dict
HEAD_PREFIX = "head."  # the backbone's output layer, never carried over to CTR-only finetuning


@dataclass
class FusedCTROutput:
    logit: Tensor  # (B,) a * lm_logit + (1 - a) * ctr_logit
    ctr_logit: Tensor  # (B,) the backbone's own logit
    lm_logit: Tensor  # (B,) PLM side: pooled prompted hidden states -> plm_head


class ClickPrompt(nn.Module):
    """CTR backbone + prompt generator + masked LM, with a PLM-side CTR head and mixing weight ``a``.

    ``a`` is a plain learnable scalar initialised at 0.5, unconstrained, as in the paper's
    ``a * plm_logit + (1 - a) * ctr_logit``: it mixes logits, so leaving [0, 1] is harmless
    and a sigmoid would only slow its updates.
    """

    def __init__(self, ctr_model: CTRModel, plm: PreTrainedModel, prompt_cfg: PromptConfig,
                 decoder_vocab: DecoderVocab | None = None, head: str = "linear") -> None:
        super().__init__()
        self.cfg = prompt_cfg
        self.decoder_vocab = decoder_vocab  # PA-MLM's decoder rows (None: the whole vocabulary)
        self.ctr_model = ctr_model
        self.plm = plm
        self.prompt = PromptGenerator.for_plm(ctr_model.output_dim, plm, prompt_cfg)
        self.plm_head = click_head(plm_info(plm).hidden_size, head)  # pooled text state -> click logit
        self.a = nn.Parameter(torch.tensor(0.5))
        self.use_prompts = True  # False: the "no prompts" ablation (logit mix only)

    def prompts(self, x_ids: dict[str, Tensor]) -> tuple[Prompts, Tensor]:
        """ID features -> (prompts for the PLM, the backbone's logit (B,))."""
        out = self.ctr_model(x_ids)
        return self.prompt(out.h), out.logit

    def pa_mlm(
        self,
        x_ids: dict[str, Tensor],
        masked_ids: Tensor,
        attention_mask: Tensor,
        labels: Tensor,
        zero_prompts: bool = False,
    ) -> MLMResult:
        """PA-MLM on masked text (B, T) with prompts from the complete ID features: the loss over
        the positions with ``labels != -100`` and the predictions there (what training runs).

        ``zero_prompts`` masks every prompt position out of attention: the PLM output is then the
        plain LM's (the "without prompts" control), with the same computation otherwise.
        """
        prompts, _ = self.prompts(x_ids)
        prompt_mask = None
        if zero_prompts:
            prompt_mask = attention_mask.new_zeros(prompts.batch_size, prompts.n_prompts)  # (B, K)
        fused = run_plm(self.plm, masked_ids, attention_mask, prompts, prompt_mask, with_logits=False)
        return mlm_at_labels(self.plm, fused.last_hidden_state, labels, self.decoder_vocab)

    def ctr_parts(self, x_ids: dict[str, Tensor], input_ids: Tensor, attention_mask: Tensor) -> FusedCTROutput:
        """Both logits and their mix, on unmasked text (B, T)."""
        prompts, ctr_logit = self.prompts(x_ids)
        fused = run_plm(self.plm, input_ids, attention_mask, prompts if self.use_prompts else None, with_logits=False)
        pooled = pool(fused.last_hidden_state, attention_mask, self.cfg.pooling)  # (B, hidden)
        lm_logit = self.plm_head(pooled).squeeze(-1)  # (B,)
        logit = self.a * lm_logit + (1 - self.a) * ctr_logit
        return FusedCTROutput(logit=logit, ctr_logit=ctr_logit, lm_logit=lm_logit)

    def ctr(self, x_ids: dict[str, Tensor], input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Finetune-with-PLM click logit (B,)."""
        return self.ctr_parts(x_ids, input_ids, attention_mask).logit

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Disjoint parameter sets, for per-part learning rates (authors: PLM 5e-5, CTR side 1e-3)."""
        return {
            "plm": list(self.plm.parameters()),
            "ctr": list(self.ctr_model.parameters()),
            "prompt": list(self.prompt.parameters()),
            "fusion": [*self.plm_head.parameters(), self.a],
        }

    def ctr_only_state_dict(self) -> dict[str, Tensor]:
        """The backbone's weights and buffers without its output layer ``head``."""
        return {k: v for k, v in self.ctr_model.state_dict().items() if not k.startswith(HEAD_PREFIX)}


def init_ctr_only(
    backbone_name: str,
    fields: list[FieldInfo],
    cfg: object | Mapping[str, Any] | None,
    clickprompt_state: Mapping[str, Tensor],
    preset: str = "default",
) -> CTRModel:
    """The plain backbone, initialised from a ClickPrompt state dict except for a fresh ``head``.

    Built by ``build_ctr_model(backbone_name, fields, cfg, preset)``, so its parameter names and
    shapes are those of an untouched backbone. Every non-head weight must be in the state dict.
    """
    model = build_ctr_model(backbone_name, fields, cfg, preset)
    state = {
        k[len(CTR_PREFIX) :]: v
        for k, v in clickprompt_state.items()
        if k.startswith(CTR_PREFIX) and not k.startswith(CTR_PREFIX + HEAD_PREFIX)
    }
    missing, unexpected = model.load_state_dict(state, strict=False)
    not_head = [k for k in missing if not k.startswith(HEAD_PREFIX)]
    if not_head or unexpected:
        raise ValueError(f"ClickPrompt state does not match {backbone_name}: missing {not_head}, unexpected {unexpected}")
    model.reset_head()
    return model
