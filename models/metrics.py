"""A run's stage metrics as typed rows, and the one formatter of them (text and Markdown tables).

Each stage writes ``<run_dir>/<stage>/metrics.json``; ``StageRow.from_metrics`` reads what a
table needs from it: what the stage trained on (rows x epochs), its test AUC / LogLoss, for a
with-LM model the fused figure next to its CTR branch alone, its LM branch alone and the final
mixing weight ``a`` (all on the same test rows), and for pretraining its held-out alignment check.
The CLI, ``train_pipeline``'s summary and the ``evaluate_model`` artifacts all print these rows.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


def _num(value: Any) -> float | None:
    """JSON-safe float (NaN, e.g. AUC on a one-class split, becomes None)."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else round(value, 6)


def pretrain_summary(metrics: dict) -> str:
    """One line of a pretraining stage's held-out alignment checks."""
    v = metrics["valid"]
    parts = []
    if "retrieval_acc" in v:
        parts.append(f"contrastive loss {v['contrastive_loss']:.3f}, text->ID retrieval {v['retrieval_acc']:.3f} "
                     f"(chance {v['retrieval_chance']:.4f})")
    if "mlm_acc_zero_prompts" in v:
        parts.append(f"masked-token acc {v['mlm_acc']:.4f} with prompts, {v['mlm_acc_zero_prompts']:.4f} zeroed")
    if "mtm_acc" in v:
        parts.append(f"masked-feature acc {v['mtm_acc']:.3f} with text, {v['mtm_acc_text_zeroed']:.3f} zeroed, "
                     f"{v['mtm_acc_text_shuffled']:.3f} another row's (chance {v['mtm_chance']:.3f})")
    return "; ".join(parts)


@dataclass
class StageRow:
    stage: str
    train_rows: int | None = None  # rows the stage trained on ...
    epochs: float | None = None  # ... and for how many epochs
    test_auc: float | None = None
    test_logloss: float | None = None
    test_n: int | None = None
    valid_auc: float | None = None
    ctr_branch_auc: float | None = None  # with-LM models: the CTR branch alone, same test rows
    lm_branch_auc: float | None = None  # ... and the LM branch alone
    a: float | None = None  # the learned mixing weight
    mlm_acc: float | None = None  # PA-MLM: held-out masked-token accuracy with prompts ...
    mlm_acc_zero_prompts: float | None = None  # ... and with them zeroed
    alignment: str | None = None  # pretraining: the held-out checks in one line
    seconds: float | None = None

    @classmethod
    def from_metrics(cls, stage: str, m: dict) -> "StageRow":
        trained = m.get("trained_on", {})
        row = cls(stage, train_rows=trained.get("rows"), epochs=_num(trained.get("epochs")),
                  seconds=_num(m.get("seconds", m.get("fit", {}).get("seconds"))))
        if "test" in m:
            row.test_auc, row.test_logloss = _num(m["test"]["auc"]), _num(m["test"]["logloss"])
            row.test_n, row.valid_auc = m["test"]["n"], _num(m.get("valid_auc"))
        else:
            valid = m.get("valid", {})  # PA-MLM reports both; ALT's contrastive-only objective neither
            row.mlm_acc, row.mlm_acc_zero_prompts = _num(valid.get("mlm_acc")), _num(valid.get("mlm_acc_zero_prompts"))
            row.alignment = pretrain_summary(m)
        if "branches" in m:
            row.ctr_branch_auc = _num(m["branches"]["ctr_branch"]["auc"])
            row.lm_branch_auc = _num(m["branches"]["lm_branch"]["auc"])
            row.a = _num(m.get("a"))
        return row

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def trained_on(self) -> str:
        if self.train_rows is None:
            return "-"
        return f"{self.train_rows:,} x {self.epochs:g}" if self.epochs is not None else f"{self.train_rows:,}"

    def branch_line(self) -> str | None:
        """With-LM models: the fused figure next to its parts."""
        if self.ctr_branch_auc is None:
            return None
        return (f"{self.stage} on the same test rows: fused AUC {_fmt(self.test_auc)}, CTR branch alone "
                f"{_fmt(self.ctr_branch_auc)}, LM branch alone {_fmt(self.lm_branch_auc)}, a = {_fmt(self.a, '.3f')}")


def stage_rows(stages: dict[str, dict]) -> list[StageRow]:
    return [StageRow.from_metrics(stage, m) for stage, m in stages.items()]


def _fmt(v: Any, spec: str = ".4f") -> str:
    return "-" if v is None else format(v, spec)


def text_table(rows: list[StageRow], indent: str = "  ") -> str:
    """Plain-text table (CLI, ``make demo``): one line per stage, then branches and alignment."""
    lines = [f"{indent}{'variant':<20}{'rows x epochs':>16}{'test AUC':>10}{'LogLoss':>10}{'MLM acc':>10}"
             f"{'zeroed':>10}{'seconds':>9}"]
    for r in rows:
        lines.append(f"{indent}{r.stage:<20}{r.trained_on:>16}{_fmt(r.test_auc):>10}{_fmt(r.test_logloss):>10}"
                     f"{_fmt(r.mlm_acc):>10}{_fmt(r.mlm_acc_zero_prompts):>10}{_fmt(r.seconds, '.0f'):>9}")
    lines += [f"{indent}{line}" for r in rows if (line := r.branch_line())]
    lines += [f"{indent}{r.stage}: {r.alignment}" for r in rows if r.alignment]
    return "\n".join(lines)


def markdown_table(rows: list[StageRow]) -> str:
    """The same rows as a Markdown table (Prefect artifacts)."""
    lines = ["| stage | trained on (rows x epochs) | test AUC | test LogLoss | n | valid AUC | "
             "masked-token acc (prompts / zeroed) | s |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mlm = f"{_fmt(r.mlm_acc)} / {_fmt(r.mlm_acc_zero_prompts)}" if r.mlm_acc is not None else ""
        lines.append(f"| {r.stage} | {r.trained_on} | {_fmt(r.test_auc)} | {_fmt(r.test_logloss)} | "
                     f"{r.test_n or ''} | {_fmt(r.valid_auc)} | {mlm} | {_fmt(r.seconds, '.0f')} |")
    lines += [f"\n{line}" for r in rows if (line := r.branch_line())]
    lines += [f"\n{r.stage}: {r.alignment}" for r in rows if r.alignment]
    return "\n".join(lines)
