"""Render a benchmark ``results.json`` as a Markdown report with PNG plots.

results.json (written by ``benchmarks.results.write_results``):
    machine, profile, dataset, seeds, created_at, command
    models: {label: {backbone, method, reference (label of its backbone or null),
                     per_seed: {seed: {auc, logloss}}, auc_mean, auc_std, logloss_mean, logloss_std,
                     paired_auc_diff: [per seed] | null, paired_auc_diff_mean: float | null}}
    alignment: {run with pretraining: {mlm_acc_values, mlm_acc_values_zero_prompts, mlm_acc, mlm_acc_zero_prompts,
                mtm_acc, mtm_acc_text_zeroed, mtm_chance, retrieval_acc, retrieval_chance (those it has)}}
    long_tail_definition: {quantile, users / items: {threshold, tail_ids, train_ids}} (optional)
    long_tail: {label: {all, tail_users, tail_items, tail_both (mean over seeds | null), <group>_std,
                        n_tail_users, n_tail_items, n_tail_both (rows per seed)}}
    efficiency: {scoring and PA-MLM figures when the ClickPrompt (DCNv2) run is in the suite: samples, device,
                 ctr_only_ms_per_1000, with_lm_ms_per_1000, with_lm_over_ctr_only, ctr_only_samples_per_s,
                 with_lm_samples_per_s, pamlm_prompted_samples_per_s, pamlm_plain_samples_per_s,
                 pamlm_prompted_over_plain; always: stage_seconds: {run: {stage: s}}, peak_rss_mb;
                 optional: data_path_seconds: {stage: s}, peak_cuda_mb, total_seconds (this invocation: flow start to report),
                 training_seconds (all runs, as recorded when they trained), reused_runs}
"""

from __future__ import annotations

import json
import statistics
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers / CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from benchmarks.suite import BACKBONES  # noqa: E402

BACKBONE_LABELS = tuple(BACKBONES.values())

PLOTS = ("auc_by_model.png", "long_tail.png", "latency.png")


def _fmt(value, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def plot_auc(results: dict, path: Path) -> None:
    """Top: test AUC per model (mean ± sd over seeds). Bottom: the paired AUC difference against
    each model's reference (mean ± sd of the per-seed differences), where small gaps are readable.
    Horizontal bars with wrapped labels, so a report with long model names (the authors' choices)
    stays readable."""
    models = results["models"]
    labels = list(models)
    means = [models[m]["auc_mean"] for m in labels]
    stds = [models[m]["auc_std"] for m in labels]
    paired = [m for m in labels if models[m].get("paired_auc_diff")]
    rows = len(labels) + len(paired)
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(10, 2.2 + 0.42 * rows), layout="constrained",
                                 gridspec_kw={"height_ratios": [len(labels), max(1, len(paired))]})
    colors = ["#888888" if models[m]["reference"] is None else "#3b75af" for m in labels]
    ax.barh(range(len(labels)), means, xerr=stds, capsize=3, color=colors)
    ax.set_yticks(range(len(labels)), [textwrap.fill(m, 48) for m in labels], fontsize=8)
    ax.invert_yaxis()
    low = min(m - s for m, s in zip(means, stds))
    ax.set_xlim(max(0.0, low - 0.01), min(1.0, max(m + s for m, s in zip(means, stds)) + 0.005))
    ax.set_xlabel("test AUC (mean ± sd)")
    ax.set_title(f"{results['dataset']}: test AUC per model, {len(results['seeds'])} seeds (grey: baselines)")
    if paired:
        diffs = [statistics.mean(models[m]["paired_auc_diff"]) for m in paired]
        spread = [statistics.stdev(models[m]["paired_auc_diff"]) if len(models[m]["paired_auc_diff"]) > 1 else 0.0
                  for m in paired]
        bx.barh(range(len(paired)), diffs, xerr=spread, capsize=3,
                color=["#3b9a5a" if d > 0 else "#c44e52" for d in diffs])
        bx.set_yticks(range(len(paired)), [textwrap.fill(f"{m} vs {models[m]['reference']}", 48) for m in paired],
                      fontsize=8)
        right_margin = blended_transform_factory(bx.transAxes, bx.transData)
        for y, (d, sd) in enumerate(zip(diffs, spread)):
            bx.text(1.01, y, f"{d:+.4f} ± {sd:.4f}", transform=right_margin, va="center", fontsize=8)
        bx.invert_yaxis()
        bx.axvline(0, color="black", linewidth=0.8)
        bx.set_xlabel("AUC − its reference's AUC, same seed (mean ± sd)")
    else:
        bx.axis("off")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_long_tail(results: dict, path: Path) -> None:
    tail = results["long_tail"]
    # each backbone next to its ClickPrompt CTR-only model: same hue, light vs dark
    backbones = [lab for lab in tail if (results["models"].get(lab) or {}).get("reference") is None]
    labels, colors = [], []
    for k, backbone in enumerate(backbones):
        light, dark = plt.cm.tab20(2 * k + 1), plt.cm.tab20(2 * k)
        labels.append(backbone)
        colors.append(light)
        for lab in tail:
            if (results["models"].get(lab) or {}).get("reference") == backbone:
                labels.append(lab)
                colors.append(dark)
    labels += [lab for lab in tail if lab not in labels]
    colors += [plt.cm.tab20(2 * (len(backbones) + i)) for i in range(len(labels) - len(colors))]
    groups = ["all", "tail_users", "tail_items", "tail_both"]
    width = 0.8 / max(1, len(labels))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for i, label in enumerate(labels):
        values = [tail[label].get(g) or 0.0 for g in groups]
        spread = [tail[label].get(f"{g}_std") or 0.0 for g in groups]  # sd over seeds
        xs = [g + i * width for g in range(len(groups))]
        ax.bar(xs, values, width, yerr=spread, capsize=2, error_kw={"linewidth": 0.8}, label=label, color=colors[i])
    ax.set_xticks([g + width * (len(labels) - 1) / 2 for g in range(len(groups))],
                  ["all", "tail users", "tail items", "both tail"])
    values = [v for lab in labels for g in groups if (v := tail[lab].get(g))]
    bottom = max(0.0, min(values) - 0.05) if values else 0.0
    ax.set_ylim(bottom, min(1.0, max(values) + 0.03) if values else 1.0)
    for i, label in enumerate(labels):
        for g in range(len(groups)):
            if not tail[label].get(groups[g]):  # too few rows (or one class) in this group
                ax.text(g + i * width, bottom, "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
    ax.set_ylabel("test AUC")
    ax.set_title("Long tail: bottom 10% users / items by training frequency "
                 f"(mean ± sd, {len(results['seeds'])} seeds)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_latency(results: dict, path: Path) -> None:
    eff = results["efficiency"]
    names = ["CTR-only", "with LM"]
    values = [eff["ctr_only_ms_per_1000"], eff["with_lm_ms_per_1000"]]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.bar(names, values, color=["#3b75af", "#c44e52"])
    ax.set_yscale("log")
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.1f} ms", ha="center", va="bottom")
    ax.set_ylabel("scoring time per 1,000 samples (ms, log scale)")
    ax.set_title(f"Inference cost: with LM is {eff['with_lm_over_ctr_only']:.0f}x CTR-only")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def trained_cell(m: dict) -> str:
    t = m.get("trained_on")
    return "—" if not t or t.get("rows") is None else f"{t['rows']:,} x {t['epochs']:g}"


def split_line(results: dict) -> str:
    """The split every run trained on, with the valid / test rows whose user or item training never saw."""
    ts = results.get("training_set")
    if not ts:
        return "same temporal split (80/10/10 by event time)"
    unseen = "; ".join(f"{name}: {u['users']:.1%} of rows with a user and {u['items']:.1%} with an item unseen in "
                       "training" for name, u in ts["unseen"].items())
    fr = "/".join(f"{f * 100:g}" for f in ts["fractions"])
    return (f"same training set for every run: {ts['split_policy']} split {fr} ({ts['identity']}, rows "
            f"{'/'.join(str(r) for r in ts['rows'].values())}); {unseen}")


def _quality(results: dict) -> list[str]:
    lines = [
        f"# Benchmark: {results['dataset']} ({results['profile']} profile)",
        "",
        f"- machine: {results['machine']}",
        f"- seeds: {', '.join(map(str, results['seeds']))}; {split_line(results)}",
        f"- created: {results['created_at']}; command: `{results.get('command', '')}`",
        "",
        "## Quality (test split)",
        "",
        "| model | backbone | trained on (rows x epochs) | test AUC | test LogLoss | AUC − reference (per seed) |",
        "|---|---|---|---|---|---|",
    ]
    for label, m in results["models"].items():
        diff = "—"
        if m.get("paired_auc_diff"):
            diff = f"{m['paired_auc_diff_mean']:+.4f} ({', '.join(f'{d:+.4f}' for d in m['paired_auc_diff'])})"
            if m["reference"] not in (None, *BACKBONE_LABELS):  # its backbone goes without saying
                diff += f" vs {m['reference']}"
        lines.append(f"| {label} | {m['backbone']} | {trained_cell(m)} | {m['auc_mean']:.4f} ± {m['auc_std']:.4f} | "
                     f"{m['logloss_mean']:.4f} ± {m['logloss_std']:.4f} | {diff} |")
    fused = {label: m for label, m in results["models"].items() if m.get("branches")}
    if fused:
        lines += ["", "Models that score with the LM, on the same test rows (mean over seeds): the fused logit, "
                  "its CTR branch alone, its LM branch alone, and the learned mixing weight `a`.", "",
                  "| model | fused AUC | CTR branch alone | LM branch alone | a |", "|---|---|---|---|---|"]
        lines += [f"| {label} | {b['fused']:.4f} | {b['ctr_branch']:.4f} | {b['lm_branch']:.4f} | {b['a']:.3f} |"
                  for label, m in fused.items() for b in [m["branches"]]]
    return lines


def _long_tail(results: dict) -> list[str]:
    lines: list[str] = []
    lines += ["", "![AUC per model](auc_by_model.png)", "", "## Long tail (bottom 10% users / items by training frequency, unseen ids included; "
              "test AUC mean ± sd over seeds; n = test rows in the group)", ""]
    definition = results.get("long_tail_definition")
    if definition:
        lines += ["Tail: " + "; ".join(
            f"{entity} with at most {d['threshold']:g} training events ({d['tail_ids']:,} of {d['train_ids']:,} "
            f"training {entity}, {d['tail_ids'] / d['train_ids']:.0%}; every id at the threshold counts) "
            f"and {entity} unseen in training" for entity, d in ((e, definition[e]) for e in ("users", "items"))) + ".", ""]
    lines += ["| model | all | tail users | tail items | both tail |", "|---|---|---|---|---|"]

    def cell(t: dict, group: str) -> str:
        value = _fmt(t.get(group)) + (f" ± {t[f'{group}_std']:.4f}" if t.get(f"{group}_std") is not None else "")
        return value + (f" (n={t[f'n_{group}']})" if f"n_{group}" in t else "")

    for label, t in results["long_tail"].items():
        lines.append(f"| {label} | " + " | ".join(cell(t, g) for g in ("all", "tail_users", "tail_items", "tail_both")) + " |")
    lines += ["", "![long tail](long_tail.png)", ""]
    return lines


def _alignment(results: dict) -> list[str]:
    lines: list[str] = []
    if results.get("alignment"):
        lines += ["## Alignment (held-out pretraining checks, mean over seeds)", "",
                  "| run | masked value tokens: with prompts / zeroed | all masked tokens: with / zeroed | "
                  "masked features: with text / text zeroed (chance) | text -> ID retrieval (chance) |",
                  "|---|---|---|---|---|"]

        def pair(a: dict, k1: str, k2: str, k3: str | None = None) -> str:
            if k1 not in a:
                return "—"
            return f"{a[k1]:.3f} / {a[k2]:.3f}" if k3 is None else f"{a[k1]:.3f} / {a[k2]:.3f} ({a[k3]:.3f})"

        for run, a in results["alignment"].items():
            retrieval = f"{a['retrieval_acc']:.3f} ({a['retrieval_chance']:.3f})" if "retrieval_acc" in a else "—"
            lines.append(f"| {run} | {pair(a, 'mlm_acc_values', 'mlm_acc_values_zero_prompts')} | "
                         f"{pair(a, 'mlm_acc', 'mlm_acc_zero_prompts')} | "
                         f"{pair(a, 'mtm_acc', 'mtm_acc_text_zeroed', 'mtm_chance')} | {retrieval} |")
        lines += [""]
    return lines


def _efficiency(results: dict) -> list[str]:
    lines: list[str] = []
    eff = results.get("efficiency", {})
    lines += ["## Efficiency", ""]
    if "ctr_only_ms_per_1000" in eff:
        lines += [f"- scoring ({eff['device']}, {eff['samples']:,} test samples): CTR-only "
                  f"{eff['ctr_only_ms_per_1000']:.1f} ms / 1,000 samples ({eff['ctr_only_samples_per_s']:,.0f}/s), "
                  f"with LM {eff['with_lm_ms_per_1000']:.1f} ms ({eff['with_lm_samples_per_s']:,.0f}/s): "
                  f"**{eff['with_lm_over_ctr_only']:.0f}x**",
                  f"- PA-MLM training: {eff['pamlm_prompted_samples_per_s']:.0f} samples/s with prompts vs "
                  f"{eff['pamlm_plain_samples_per_s']:.0f} plain MLM ({eff['pamlm_prompted_over_plain']:.2f}x)"]
    else:
        lines += ["- no scoring / PA-MLM figures: the ClickPrompt (DCNv2) run was not part of this benchmark"]
    if eff.get("training_cost"):
        cost = eff["training_cost"]
        ceiling = (f"{cost['ceiling']}: {cost['gemm_gflop_s']:.1f} GFLOP/s" if "ceiling" in cost else  # older results
                   f"the same process's 2048^3 float32 GEMM: {cost['gemm_fp32_gflop_s']:.1f} GFLOP/s, "
                   f"{cost['threads']} threads")
        lines += ["", f"Training cost per stage (counted FLOPs; {ceiling}):", "",
                  "| stage | MFLOP / sample | samples/s | achieved GFLOP/s | utilisation |", "|---|---|---|---|---|"]
        lines += [f"| {r['stage']} | {r['mflop_per_sample']:.1f} | {r['samples_per_s']:.0f} | "
                  f"{r['achieved_gflop_s']:.1f} | {r['utilisation']:.2f} |" for r in cost["rows"]]
        lines += [""]
    memory = f"- peak resident memory of the benchmark process (training included): {eff['peak_rss_mb']:,.0f} MB"
    if eff.get("peak_cuda_mb"):
        memory += f"; peak CUDA memory allocated: {eff['peak_cuda_mb']:,.0f} MB"
    lines += [memory]
    if "total_seconds" in eff:
        line = (f"- wall time of this benchmark (from its flow's start until its results were written, the "
                f"efficiency measurements included): {eff['total_seconds'] / 60:.1f} min")
        if eff.get("reused_runs"):
            line += f" ({len(eff['reused_runs'])} runs taken from an earlier attempt)"
        if "training_seconds" in eff:
            line += f"; training time of all runs, as recorded when they ran: {eff['training_seconds'] / 60:.1f} min"
        lines += [line]
    if eff.get("data_path_seconds"):
        lines += ["", "Data path (raw files to training sets, fresh home):", "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {stage} | {sec:.2f} |" for stage, sec in eff["data_path_seconds"].items()]
    if eff.get("stage_seconds"):
        lines += ["", "Training stages (mean over seeds):", "", "| run | stage | seconds |", "|---|---|---|"]
        lines += [f"| {run} | {stage} | {sec:.1f} |" for run, stages in eff["stage_seconds"].items()
                  for stage, sec in stages.items()]
    if "ctr_only_ms_per_1000" in eff:
        lines += ["", "![latency](latency.png)"]
    return lines


def markdown(results: dict) -> str:
    """The report: quality, long tail, alignment checks and efficiency, each a section."""
    return "\n".join(_quality(results) + _long_tail(results) + _alignment(results) + _efficiency(results) + [""])


def render(results_path: Path) -> Path:
    """Write report.md and the PNG plots next to ``results_path``; return the report's path."""
    results = json.loads(results_path.read_text(encoding="utf-8"))
    out = results_path.parent
    plot_auc(results, out / PLOTS[0])
    plot_long_tail(results, out / PLOTS[1])
    if "ctr_only_ms_per_1000" in results.get("efficiency", {}):
        plot_latency(results, out / PLOTS[2])
    report = out / "report.md"
    report.write_text(markdown(results), encoding="utf-8")
    return report
