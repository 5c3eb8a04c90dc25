"""ALT / FLIP (Wang et al., RecSys 2024): fine-grained alignment of a CTR model and a masked LM.

Pretraining (``AltModel``): one batch of (ID features x, rendered text), three weighted losses.
  contrastive  InfoNCE in both directions between the LM's pooled text state and the CTR
               model's h, each projected to a shared space (alone, this is CTRL's objective)
  field MLM    whole field values masked in the text (every token of ~15% of the row's fields,
               e.g. the whole title, found through ``EncodedSplit.field_ids``); the LM recovers
               them with the complete IDs available as per-layer key/value prefixes generated
               from the CTR model's h (ClickPrompt's ``PromptGenerator`` + ``run_plm``)
  MTM          ~15% of the single-valued ID fields set to MASK (index 2); the CTR side, its h
               (from the masked features) fused with the complete text's pooled state, scores
               the true id against ids of the same field sampled as negatives: cross-entropy
               over 1 + n candidates (InfoNCE-style, never a softmax over the vocabulary), each
               scored by an output embedding and bias per id (as MAP's masked feature
               prediction). Its gradient reaches the backbone's embeddings and interaction
               layers through h, the weights CTR-only finetuning carries over.

Finetuning: the backbone alone (``models.clickprompt.init_ctr_only``: ``AltModel`` keeps it
under the same ``ctr_model.`` prefix), the LM alone or both (``models.text_ctr``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PreTrainedModel

from models.ctr import CTRModel
from models.encoding import MASK, NUM_RESERVED, FieldInfo
from models.layers.embedding import NUMERIC
from models.mlm import IGNORE_INDEX, DecoderVocab, MLMResult, mlm_at_labels
from models.plm import plm_info
from models.prompt import PromptConfig, PromptGenerator, Prompts, pool, run_plm
from models.train.config import AltOptions

TextMode = Literal["full", "zero", "shuffle"]  # MTM's text view: as is, zeroed, or another row's


# --- masking -------------------------------------------------------------------------------


def mtm_fields(fields: list[FieldInfo]) -> list[FieldInfo]:
    """The fields masked tabular modelling recovers: single-valued, embedded by id, >= 2 known values.

    Multi-valued fields (genres) and numeric fields are left out: they have no single true id.
    """
    return [f for f in fields if f.max_len == 1 and f.kind != NUMERIC and f.vocab_size - NUM_RESERVED >= 2]


def choose_per_row(eligible: Tensor, ratio: float, generator: torch.Generator) -> Tensor:
    """(B, F) bool -> (B, F) bool: ``round(ratio * n)`` of each row's n eligible entries, at least one
    where any is eligible, chosen uniformly at random."""
    k = (eligible.sum(1).float() * ratio).round().clamp(min=1).long()  # (B,)
    scores = torch.rand(eligible.shape, generator=generator).to(eligible.device)  # (B, F)
    scores = scores.masked_fill(~eligible, 2.0)  # ineligible entries sort last
    rank = scores.argsort(1).argsort(1)  # (B, F): rank of each entry within its row
    return eligible & (rank < k[:, None])


def mask_text_fields(
    input_ids: Tensor, field_ids: Tensor, n_fields: int, ratio: float, mask_id: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Field-level masking: every token of ``ratio`` of the fields present in a row -> ``mask_id``.

    input_ids, field_ids (B, T) (field index of each token, -1 for template words and specials).
    Returns (masked ids (B, T), labels (B, T): the original id where masked, -100 elsewhere).
    """
    valued = field_ids >= 0  # (B, T)
    index = field_ids.long().clamp(min=0)  # (B, T)
    present = (F.one_hot(index, n_fields).bool() & valued[..., None]).any(1)  # (B, F)
    chosen = choose_per_row(present, ratio, generator)  # (B, F)
    hit = valued & chosen.gather(1, index)  # (B, T)
    labels = torch.where(hit, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    return input_ids.masked_fill(hit, mask_id), labels


def mask_features(
    x: Mapping[str, Tensor], fields: list[FieldInfo], ratio: float, generator: torch.Generator
) -> tuple[dict[str, Tensor], Tensor]:
    """Masked tabular view: ``ratio`` of each row's ``fields`` with a known value (id >= 3) -> MASK.

    Returns (x with those values replaced, chosen (B, len(fields)) bool); other fields untouched.
    """
    values = torch.stack([x[f.name] for f in fields], dim=1)  # (B, F_m)
    chosen = choose_per_row(values >= NUM_RESERVED, ratio, generator)  # (B, F_m)
    masked = dict(x)
    for j, f in enumerate(fields):
        masked[f.name] = x[f.name].masked_fill(chosen[:, j], MASK)
    return masked, chosen


def sample_candidates(true: Tensor, vocab_size: int, n_negatives: int, generator: torch.Generator) -> Tensor:
    """(B,) true ids -> (B, 1 + n) candidates: the true id first, then n negative ids of the field.

    Negatives are known ids (>= 3) other than the true one, drawn uniformly with replacement; a
    field with no more than ``n_negatives`` other values gets each of them once instead.
    """
    b, others = true.shape[0], vocab_size - NUM_RESERVED - 1
    t = (true - NUM_RESERVED).clamp(min=0)[:, None]  # (B, 1); rows not masked give unused candidates
    if others <= n_negatives:
        r = torch.arange(others).expand(b, others).to(true.device)  # (B, others)
    else:
        r = torch.randint(others, (b, n_negatives), generator=generator).to(true.device)  # (B, n)
    negatives = r + (r >= t).long() + NUM_RESERVED  # skip the true index
    return torch.cat([true[:, None], negatives], dim=1)


class AltMasker:
    """Adds ALT's masked views to a batch; a fixed seed gives the same masks and negatives each run.

    Adds ``masked_ids`` / ``mlm_labels`` (B, T) (field MLM), ``x_masked`` (MTM's input),
    ``mtm_mask`` (B, F_m) and ``mtm_candidates`` {field: (B, C_f)} - each only if its loss is on.
    """

    def __init__(self, fields: list[FieldInfo], mask_token_id: int, opts: AltOptions, seed: int,
                 vocab: DecoderVocab | None = None) -> None:
        self.n_fields, self.targets, self.mask_token_id, self.opts = len(fields), mtm_fields(fields), mask_token_id, opts
        self.scored = None if vocab is None or vocab.full else vocab.ids  # tokens a restricted decoder scores
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, batch: dict) -> dict:
        out, o = dict(batch), self.opts
        if o.mlm_weight > 0:
            out["masked_ids"], out["mlm_labels"] = mask_text_fields(
                batch["input_ids"], batch["field_ids"], self.n_fields, o.text_mask_ratio, self.mask_token_id,
                self.generator)
            if self.scored is not None:  # masked like the rest of its field, but no target outside the decoder
                outside = ~torch.isin(out["mlm_labels"], self.scored.to(out["mlm_labels"].device))
                out["mlm_labels"] = out["mlm_labels"].masked_fill(outside, IGNORE_INDEX)
        if o.mtm_weight > 0 and self.targets:
            out["x_masked"], out["mtm_mask"] = mask_features(batch["x"], self.targets, o.feature_mask_ratio, self.generator)
            out["mtm_candidates"] = {
                f.name: sample_candidates(batch["x"][f.name], f.vocab_size, o.n_negatives, self.generator)
                for f in self.targets
            }
        return out


# --- pretraining model ---------------------------------------------------------------------


@dataclass
class MTMResult:
    loss: Tensor  # () mean noise-contrastive loss over the masked features
    hits: Tensor  # (M,) bool: the true id outscored every sampled negative
    n_candidates: Tensor  # (M,) candidates per masked feature (1 / n is the chance of a hit)
    field: Tensor  # (M,) index in ``AltModel.targets`` of each masked feature's field


@dataclass
class AltOutput:
    loss: Tensor  # () weighted sum of the losses that are on
    contrastive: Tensor | None  # () InfoNCE, mean of both directions
    retrieval_hits: Tensor | None  # (B,) bool: text i retrieves its own ID row among the batch
    mlm: MLMResult | None
    mtm: MTMResult | None


class AltModel(nn.Module):
    """CTR backbone + masked LM with ALT's three pretraining losses (see the module docstring).

    Modules of a loss whose weight is 0 are not built (CTRL: backbone, LM, two projections).
    """

    def __init__(self, ctr_model: CTRModel, plm: PreTrainedModel, prompt_cfg: PromptConfig, opts: AltOptions,
                 decoder_vocab: DecoderVocab | None = None) -> None:
        super().__init__()
        hidden, h_dim = plm_info(plm).hidden_size, ctr_model.output_dim
        self.opts, self.pooling = opts, prompt_cfg.pooling
        self.decoder_vocab = decoder_vocab  # the field MLM's decoder rows (None: the whole vocabulary)
        self.ctr_model = ctr_model  # same prefix as ClickPrompt's: init_ctr_only reads it
        self.plm = plm
        self.targets = mtm_fields(ctr_model.embedding.fields)
        self.text_proj: nn.Linear | None = None  # pooled text -> shared space (contrastive)
        self.ctr_proj: nn.Linear | None = None  # h -> shared space (contrastive)
        self.prompt: PromptGenerator | None = None  # h -> per-layer key/value prefixes (field MLM)
        self.mtm_head: nn.Sequential | None = None  # [h of masked IDs, pooled text] -> one query per MTM field
        self.mtm_out: nn.ModuleDict | None = None  # per MTM field: output embedding of each id (vocab, P)
        self.mtm_bias: nn.ModuleDict | None = None  # per MTM field: a learned prior of each id (vocab, 1)
        if opts.contrastive_weight > 0:
            self.text_proj = nn.Linear(hidden, opts.proj_dim)
            self.ctr_proj = nn.Linear(h_dim, opts.proj_dim)
        if opts.mlm_weight > 0:
            self.prompt = PromptGenerator.for_plm(h_dim, plm, prompt_cfg)
        if opts.mtm_weight > 0 and self.targets:
            p, out = opts.proj_dim, len(self.targets) * opts.proj_dim
            self.mtm_head = nn.Sequential(nn.Linear(h_dim + hidden, p), nn.GELU(), nn.Linear(p, out))
            rows = {f.name: nn.Embedding(f.vocab_size, p) for f in self.targets}
            priors = {f.name: nn.Embedding(f.vocab_size, 1) for f in self.targets}
            for name in rows:
                nn.init.uniform_(rows[name].weight, -(p**-0.5), p**-0.5)
                nn.init.zeros_(priors[name].weight)
            self.mtm_out, self.mtm_bias = nn.ModuleDict(rows), nn.ModuleDict(priors)

    def text_state(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """The plain LM's pooled state of unmasked text (B, T) -> (B, hidden)."""
        hidden = run_plm(self.plm, input_ids, attention_mask, with_logits=False).last_hidden_state  # (B, T, hidden)
        return pool(hidden, attention_mask, self.pooling)

    def prompts(self, x: Mapping[str, Tensor]) -> tuple[Prompts, Tensor]:
        """Complete ID features -> (key/value prefixes for the LM, the backbone's logit (B,))."""
        assert self.prompt is not None, "field MLM is off (mlm_weight=0)"
        out = self.ctr_model(x)
        return self.prompt(out.h), out.logit

    def contrastive(self, text: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """InfoNCE over the batch. text (B, hidden), h (B, H) -> (loss (), retrieval hits (B,))."""
        assert self.text_proj is not None and self.ctr_proj is not None, "contrastive loss is off"
        t = F.normalize(self.text_proj(text).float(), dim=-1)  # (B, P)
        c = F.normalize(self.ctr_proj(h).float(), dim=-1)  # (B, P)
        logits = t @ c.T / self.opts.temperature  # (B, B): text i against the ID rows of the batch
        target = torch.arange(len(logits), device=logits.device)
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
        return loss, logits.argmax(1) == target

    def field_mlm(
        self, h: Tensor, masked_ids: Tensor, attention_mask: Tensor, labels: Tensor, zero_prompts: bool = False
    ) -> MLMResult:
        """Recover masked field values (B, T) with prefixes from the complete IDs' h (B, H).

        ``zero_prompts`` masks every prefix position out of attention: the plain LM's prediction.
        """
        assert self.prompt is not None, "field MLM is off (mlm_weight=0)"
        prompts = self.prompt(h)
        prompt_mask = attention_mask.new_zeros(prompts.batch_size, prompts.n_prompts) if zero_prompts else None  # (B, K)
        fused = run_plm(self.plm, masked_ids, attention_mask, prompts, prompt_mask, with_logits=False)
        return mlm_at_labels(self.plm, fused.last_hidden_state, labels, self.decoder_vocab)

    def mtm(self, x_masked: Mapping[str, Tensor], mtm_mask: Tensor, candidates: Mapping[str, Tensor], text: Tensor) -> MTMResult:
        """Score each masked feature's true id against its negatives.

        x_masked: features with MASK in place; mtm_mask (B, F_m); candidates {field: (B, C_f)},
        true id first; text (B, hidden), the complete text's pooled state (zeros: no text).
        """
        assert self.mtm_head is not None and self.mtm_out is not None and self.mtm_bias is not None, \
            "masked tabular modelling is off (mtm_weight=0)"
        h = self.ctr_model(x_masked).h  # (B, H)
        queries = self.mtm_head(torch.cat([h, text.to(h.dtype)], dim=1))  # (B, F_m * P)
        queries = queries.view(h.shape[0], len(self.targets), self.opts.proj_dim)  # (B, F_m, P)
        losses, hits, sizes, which = [], [], [], []
        for j, f in enumerate(self.targets):
            rows = mtm_mask[:, j]  # (B,)
            if not rows.any():
                continue
            cand = candidates[f.name][rows]  # (M_f, C)
            out = self.mtm_out[f.name](cand)  # (M_f, C, P)
            logits = torch.einsum("mp,mcp->mc", queries[rows, j], out) + self.mtm_bias[f.name](cand).squeeze(-1)  # (M_f, C)
            logits = logits.float()
            losses.append(F.cross_entropy(logits, logits.new_zeros(len(logits), dtype=torch.long), reduction="none"))
            hits.append(logits[:, 0] > logits[:, 1:].max(1).values)
            sizes.append(torch.full_like(hits[-1], cand.shape[1], dtype=torch.long))
            which.append(torch.full_like(hits[-1], j, dtype=torch.long))
        if not losses:
            empty = mtm_mask.new_zeros(0)
            return MTMResult(queries.sum() * 0.0, empty, empty.long(), empty.long())
        return MTMResult(torch.cat(losses).mean(), torch.cat(hits), torch.cat(sizes), torch.cat(which))

    def forward(self, batch: dict, text_mode: TextMode = "full", zero_prompts: bool = False) -> AltOutput:
        """All losses that are on, for a batch from ``AltMasker``. ``text_mode`` changes only MTM's
        text view and ``zero_prompts`` only the field MLM's prefixes (the controls)."""
        o = self.opts
        h = self.ctr_model(batch["x"]).h  # (B, H), complete IDs
        text = None
        if self.text_proj is not None or self.mtm_head is not None:
            text = self.text_state(batch["input_ids"], batch["attention_mask"])  # (B, hidden), complete text
        loss = h.new_zeros(())
        contrastive = hits = mlm = mtm = None
        if self.text_proj is not None:
            assert text is not None
            contrastive, hits = self.contrastive(text, h)
            loss = loss + o.contrastive_weight * contrastive
        if self.prompt is not None:
            mlm = self.field_mlm(h, batch["masked_ids"], batch["attention_mask"], batch["mlm_labels"], zero_prompts)
            loss = loss + o.mlm_weight * mlm.loss
        if self.mtm_head is not None:
            assert text is not None
            mtm = self.mtm(batch["x_masked"], batch["mtm_mask"], batch["mtm_candidates"], text_view(text, text_mode))
            loss = loss + o.mtm_weight * mtm.loss
        return AltOutput(loss, contrastive, hits, mlm, mtm)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Disjoint parameter sets; "plm" gets the LM learning rate."""
        groups = {"plm": list(self.plm.parameters()), "ctr": list(self.ctr_model.parameters())}
        for name in ("text_proj", "ctr_proj", "prompt", "mtm_head", "mtm_out", "mtm_bias"):
            module = getattr(self, name)
            if module is not None:
                groups[name] = list(module.parameters())
        return groups


def text_view(text: Tensor, mode: TextMode) -> Tensor:
    """(B, hidden) pooled text as MTM sees it: as is, zeroed, or another row's (half a batch away)."""
    if mode == "zero":
        return torch.zeros_like(text)
    if mode == "shuffle":
        return text.roll(len(text) // 2, dims=0)
    return text


__all__ = [
    "AltMasker",
    "AltModel",
    "AltOutput",
    "MTMResult",
    "choose_per_row",
    "mask_features",
    "mask_text_fields",
    "mtm_fields",
    "sample_candidates",
    "text_view",
]
