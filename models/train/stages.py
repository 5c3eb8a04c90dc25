"""The training stages by name: the one place their names are written.

    baseline           the plain CTR backbone, trained from scratch (the reference)
    pretrain           the method's objective: PA-MLM (clickprompt: prompts from the complete IDs
                       + masked text -> recover tokens), ALT's three losses (alt), or ALT's
                       contrastive loss alone (ctrl)
    finetune-with-lm   clickprompt: ClickPrompt with the LM, a * lm_logit + (1 - a) * ctr_logit;
                       alt / ctrl / lm_only: backbone and LM jointly, a * ctr_logit + (1 - a) * text_logit
    finetune-ctr-only  the plain backbone initialised from the pretraining checkpoint, fresh head
    finetune-lm-only   the LM alone (pooled text -> linear head), from the pretraining checkpoint's
                       LM when there is one (method lm_only: the plain LM, CTR-BERT / PTab style)

``Stage`` is a ``StrEnum``: a member is its name as a string (in JSON, folder names, CLI choices).
Kept free of torch imports: the CLI and the flows' parameter types read it.
"""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    BASELINE = "baseline"
    PRETRAIN = "pretrain"
    FINETUNE_WITH_LM = "finetune-with-lm"
    FINETUNE_CTR_ONLY = "finetune-ctr-only"
    FINETUNE_LM_ONLY = "finetune-lm-only"


STAGES: tuple[Stage, ...] = tuple(Stage)  # every stage, in training order
# ClickPrompt's run ("all"): the reference, PA-MLM, then both finetunings
CLICKPROMPT_STAGES = (Stage.BASELINE, Stage.PRETRAIN, Stage.FINETUNE_WITH_LM, Stage.FINETUNE_CTR_ONLY)
TEXT_STAGES = frozenset({Stage.PRETRAIN, Stage.FINETUNE_WITH_LM, Stage.FINETUNE_LM_ONLY})  # need the PLM's tokens
# stages that never start from the run's pretraining checkpoint (a finetuning's fingerprint names it)
FROM_SCRATCH = frozenset({Stage.BASELINE, Stage.PRETRAIN})
# what may be served: the backbone's inference graph, no LM at inference time
SERVABLE_STAGES = (Stage.FINETUNE_CTR_ONLY, Stage.BASELINE)
REGISTERED_STAGE = Stage.FINETUNE_CTR_ONLY  # what a pipeline registers (zero extra inference cost)
WITH_LM_SERVING_METHODS = ("clickprompt",)  # whose finetune-with-lm model serving can rebuild (the LM kept)
REGISTRABLE_STAGES = (*SERVABLE_STAGES, Stage.FINETUNE_WITH_LM)  # the last: of WITH_LM_SERVING_METHODS only
RETRAIN_STAGES = (Stage.BASELINE, Stage.PRETRAIN, Stage.FINETUNE_CTR_ONLY)  # the weekly retrain's default

# The default stage list of each method (``clickprompt train --method M``; --stages overrides).
METHOD_STAGES: dict[str, tuple[Stage, ...]] = {
    "baseline": (Stage.BASELINE,),
    "clickprompt": CLICKPROMPT_STAGES,
    "alt": (Stage.PRETRAIN, Stage.FINETUNE_CTR_ONLY, Stage.FINETUNE_LM_ONLY, Stage.FINETUNE_WITH_LM),
    "ctrl": (Stage.PRETRAIN, Stage.FINETUNE_CTR_ONLY),
    "lm_only": (Stage.FINETUNE_LM_ONLY,),
}
ALIGNMENT_METHODS = ("alt", "ctrl")  # methods whose pretraining is ALT's (ctrl: its contrastive loss alone)


def serving_refusal(stage: str, method: str | None) -> str | None:
    """Why a run's ``stage`` of ``method`` cannot be served, or None when it can: the registry asks
    before it registers, the model builder before it builds (one rule, so nothing is registered
    that the server would then fail to load)."""
    if stage not in REGISTRABLE_STAGES:
        return f"stage {stage!r} cannot be served; registrable stages: {', '.join(REGISTRABLE_STAGES)}"
    if stage == Stage.FINETUNE_WITH_LM and method not in WITH_LM_SERVING_METHODS:
        return (f"cannot serve training stage {stage!r} of method {method!r}: serving keeps the LM only for "
                f"method {' / '.join(WITH_LM_SERVING_METHODS)}; the CTR-only stage of every method serves without it")
    return None


def stage(name: str) -> Stage:
    """``name`` as a Stage, or a ValueError naming the known ones."""
    try:
        return Stage(name)
    except ValueError:
        raise ValueError(f"unknown stage {name!r}; known: {[s.value for s in STAGES]}") from None


def stages(names) -> list[Stage]:
    """Each name as a Stage, in the order given, duplicates dropped."""
    return [stage(n) for n in dict.fromkeys(names)]


def default_stages(method: str) -> list[Stage]:
    if method not in METHOD_STAGES:
        raise ValueError(f"unknown method {method!r}; known: {sorted(METHOD_STAGES)}")
    return list(METHOD_STAGES[method])


def check_stages(method: str, names) -> list[Stage]:
    """The stages a run of ``method`` trains, checked up front (unknown names, lm_only's missing pretraining)."""
    chosen = stages(names)
    if method == "lm_only" and Stage.PRETRAIN in chosen:
        raise ValueError("method lm_only has no pretraining stage (it finetunes the plain LM)")
    return chosen
