"""ALT's held-out checks: its losses and alignment checks on fixed masks and negatives, summed over
batches and turned into rates (what the pretraining stage of method alt / ctrl early-stops on and
reports beside the ablated twin of each check)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from models.alt import AltMasker, AltModel, text_view
from models.data import EncodedSplit, batch_at, eval_batches
from models.encoding import FieldInfo


@torch.no_grad()
def alignment_counts(model: AltModel, batch: dict) -> dict[str, float]:
    """Sums over one batch (from ``AltMasker``) of the held-out losses and checks, each loss on the
    same masks and negatives with and without the other view; ``alignment_metrics`` makes rates.

    Checks: text -> its own ID row among the batch (contrastive); field-MLM token accuracy with
    the ID prefixes and with them zeroed; MTM accuracy (true id above every sampled negative)
    with the row's text, the text zeroed, and another row's text.
    """
    out = model(batch)
    n = len(batch["label"])
    sums = {"rows": n, "loss": float(out.loss) * n}
    if out.contrastive is not None and out.retrieval_hits is not None:
        sums.update(contrastive=float(out.contrastive) * n, retrieval_hits=int(out.retrieval_hits.sum()),
                    retrieval_chance=n * (1.0 / n))
    if out.mlm is not None:
        h = model.ctr_model(batch["x"]).h  # (B, H)
        zeroed = model.field_mlm(h, batch["masked_ids"], batch["attention_mask"], batch["mlm_labels"], zero_prompts=True)
        m = out.mlm.true.numel()
        sums.update(masked_tokens=m, mlm_loss=float(out.mlm.loss) * m, mlm_hits=int((out.mlm.pred == out.mlm.true).sum()),
                    mlm_loss_zero_prompts=float(zeroed.loss) * m, mlm_hits_zero_prompts=int((zeroed.pred == zeroed.true).sum()))
    if out.mtm is not None:
        text = model.text_state(batch["input_ids"], batch["attention_mask"])  # (B, hidden)
        m = out.mtm.hits.numel()
        sums.update(masked_features=m, mtm_loss=float(out.mtm.loss) * m, mtm_hits=int(out.mtm.hits.sum()),
                    mtm_chance=float((1.0 / out.mtm.n_candidates.float()).sum()))
        for j, f in enumerate(model.targets):
            sums[f"mtm_features/{f.name}"] = int((out.mtm.field == j).sum())
            sums[f"mtm_hits/{f.name}"] = int(out.mtm.hits[out.mtm.field == j].sum())
        for mode in ("zero", "shuffle"):
            control = model.mtm(batch["x_masked"], batch["mtm_mask"], batch["mtm_candidates"], text_view(text, mode))
            sums[f"mtm_loss_text_{mode}"] = float(control.loss) * m
            sums[f"mtm_hits_text_{mode}"] = int(control.hits.sum())
            for j, f in enumerate(model.targets):
                sums[f"mtm_hits_text_{mode}/{f.name}"] = int(control.hits[control.field == j].sum())
    return sums


def alignment_metrics(sums: Mapping[str, float]) -> dict:
    """Summed ``alignment_counts`` -> mean losses and accuracies (``*_acc``: share of hits)."""
    rows, tokens, feats = sums["rows"], max(sums.get("masked_tokens", 0), 1), max(sums.get("masked_features", 0), 1)
    out: dict = {"loss": sums["loss"] / rows}
    if "contrastive" in sums:
        out.update(contrastive_loss=sums["contrastive"] / rows, retrieval_acc=sums["retrieval_hits"] / rows,
                   retrieval_chance=sums["retrieval_chance"] / rows)
    if "masked_tokens" in sums:
        out.update(mlm_loss=sums["mlm_loss"] / tokens, mlm_loss_zero_prompts=sums["mlm_loss_zero_prompts"] / tokens,
                   mlm_acc=sums["mlm_hits"] / tokens, mlm_acc_zero_prompts=sums["mlm_hits_zero_prompts"] / tokens,
                   masked_tokens=int(sums["masked_tokens"]))
    if "masked_features" in sums:
        out.update(mtm_loss=sums["mtm_loss"] / feats, mtm_acc=sums["mtm_hits"] / feats,
                   mtm_loss_text_zeroed=sums["mtm_loss_text_zero"] / feats,
                   mtm_acc_text_zeroed=sums["mtm_hits_text_zero"] / feats,
                   mtm_loss_text_shuffled=sums["mtm_loss_text_shuffle"] / feats,
                   mtm_acc_text_shuffled=sums["mtm_hits_text_shuffle"] / feats,
                   mtm_chance=sums["mtm_chance"] / feats, masked_features=int(sums["masked_features"]))
        by_field = {}
        for key, count in sums.items():
            if key.startswith("mtm_features/") and count:
                name = key.split("/", 1)[1]
                by_field[name] = {"n": int(count), "acc": sums[f"mtm_hits/{name}"] / count,
                                  "acc_text_zeroed": sums[f"mtm_hits_text_zero/{name}"] / count,
                                  "acc_text_shuffled": sums[f"mtm_hits_text_shuffle/{name}"] / count}
        out["mtm_by_field"] = by_field
    return out



def alt_metrics(model: AltModel, fields: list[FieldInfo], mask_token_id: int, vocab, split: EncodedSplit,
                batch_size: int, device: torch.device) -> dict:
    """Held-out ALT losses and alignment checks (``alignment_counts``) on fixed masks and negatives
    (the masking seed is fixed), so successive evaluations are comparable."""
    model.eval()
    masker = AltMasker(fields, mask_token_id, model.opts, seed=12345, vocab=vocab)
    sums: dict[str, float] = {}
    for index in eval_batches(split, batch_size):
        for key, value in alignment_counts(model, masker(batch_at(split, index, device))).items():
            sums[key] = sums.get(key, 0) + value
    return alignment_metrics(sums)
