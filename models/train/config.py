"""Typed training configs, with named profiles: ``smoke`` (tests), ``demo`` (2 CPU cores, < 10 min), ``paper``.

Every config rejects unknown keys. A profile is a set of overrides on the defaults below;
``load_config(profile, overrides)`` applies dotted ``--set`` style overrides on top, e.g.
``{"pretrain.epochs": 2, "backbone": "autoint"}``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Method = Literal["clickprompt", "alt", "ctrl", "lm_only", "baseline"]
METHODS: tuple[str, ...] = ("clickprompt", "alt", "ctrl", "lm_only", "baseline")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class StageConfig(_Strict):
    """Optimisation of one training stage (one run of the trainer)."""

    epochs: int = Field(3, ge=1)  # passes over the (sub-sampled) training split
    batch_size: int = Field(256, ge=1)  # training batch size
    eval_batch_size: int = Field(1024, ge=1)  # batch size for scoring
    lr_lm: float = Field(5e-5, gt=0)  # AdamW learning rate of the language model's parameters
    lr_ctr: float = Field(1e-3, gt=0)  # AdamW learning rate of the CTR model, prompt generator and heads
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)  # share of steps with linear warmup
    schedule: Literal["linear", "cosine", "constant"] = "linear"  # decay after warmup
    grad_clip: float = Field(1.0, gt=0)  # max global gradient norm
    patience: int = Field(2, ge=1)  # epochs without validation improvement before stopping
    max_train_samples: int | None = Field(None, ge=1)  # sub-sample the training split (None: all)
    max_eval_samples: int | None = Field(None, ge=1)  # sub-sample validation (test is always complete)
    evals_per_epoch: int = Field(1, ge=1)  # validation checks per epoch (early stopping granularity)
    checkpoint_every: int = Field(200, ge=1)  # steps between resumable checkpoints
    group_by_length: bool = True  # text stages: batches of rows of similar token length (less padding)
    log_every: int = Field(50, ge=1)  # steps between reading the losses back from the device (one sync)
    # AdamW weight decay 0 for biases, LayerNorm / BatchNorm weights and embeddings (the authors' choice)
    no_decay: bool = False
    compile: bool = False  # torch.compile the LM encoder(s) of the stage's model (no-op without an LM)


class PromptOptions(_Strict):
    n_prompts: int = Field(10, ge=1)  # K prompts per layer (paper default 10)
    hidden: int = Field(256, ge=1)  # width d of the shared first projection layer
    input_only: bool = False  # ablation: prompts only at the input layer
    disabled: bool = False  # ablation "no prompts": LM and CTR model meet only in the logit mix


class PretrainConfig(StageConfig):
    mask_prob: float = Field(0.15, gt=0, lt=1)  # share of text tokens selected for masking
    # MLM decoder rows: "train" = the token ids of the run's training texts + specials (stored with
    # the run; targets and random replacements stay inside), "full" = the whole vocabulary
    decoder_vocab: Literal["train", "full"] = "train"
    # rows pretraining learns from: the train split, or train + validation (the authors' PA-MLM; never
    # test). With "train+valid" the held-out checks (early stopping, best checkpoint) use a fixed random
    # slice of those rows (max_eval_samples, else 5%), kept out of training.
    rows: Literal["train", "train+valid"] = "train"
    # steps training the MLM head alone before pretraining (a checkpoint without a trained head: minilm-l6)
    head_warmup_steps: int = Field(0, ge=0)


class AltOptions(_Strict):
    """ALT/FLIP pretraining (method ``alt``; ``ctrl`` uses the contrastive loss alone).

    Loss = contrastive_weight * InfoNCE(text, ids) + mlm_weight * field-level MLM
         + mtm_weight * masked tabular modelling. The cross-modal prefix of the field-level MLM
    takes its size from ``TrainConfig.prompt``.
    """

    contrastive_weight: float = Field(1.0, ge=0)  # instance-level InfoNCE, both directions
    mlm_weight: float = Field(1.0, ge=0)  # field-level MLM, the LM sees the complete IDs through prefixes
    mtm_weight: float = Field(1.0, ge=0)  # masked tabular modelling, the CTR side sees the complete text
    temperature: float = Field(0.7, gt=0)  # InfoNCE temperature on cosine similarities (FLIP's code: 0.7)
    proj_dim: int = Field(128, ge=1)  # shared space of the contrastive loss; width of the MTM fusion layer
    text_mask_ratio: float = Field(0.15, gt=0, le=1)  # share of a row's text fields masked whole (>= 1 per row)
    feature_mask_ratio: float = Field(0.15, gt=0, le=1)  # share of a row's ID fields set to MASK (>= 1 per row)
    n_negatives: int = Field(25, ge=1)  # sampled negative ids per masked feature (all others if fewer exist)

    @model_validator(mode="after")
    def _some_loss(self) -> "AltOptions":
        if self.contrastive_weight + self.mlm_weight + self.mtm_weight <= 0:
            raise ValueError("at least one ALT loss weight must be positive")
        return self


class TrainConfig(_Strict):
    profile: str = "default"  # name of the profile these settings came from
    method: Method = "clickprompt"
    backbone: str = "dcnv2"  # a name in models.ctr.CTR_MODELS
    backbone_preset: Literal["default", "smoke"] = "default"
    backbone_config: dict[str, Any] = Field(default_factory=dict)  # overrides, checked by the model's dataclass
    plm: str = "bert-2l-128"  # folder under data/plms, a local path, or a hub name
    max_len: int = Field(96, ge=8)  # tokens per sample text (the ML-100K texts are ~50-70 tokens)
    pooling: Literal["cls", "mean"] = "cls"
    head: Literal["linear", "mlp"] = "linear"  # LM-side click head: Linear(H,1), or Linear(H,H)-Tanh-Linear(H,1)
    prompt: PromptOptions = PromptOptions()
    alt: AltOptions = AltOptions()  # ALT / CTRL pretraining objective (methods alt, ctrl)
    baseline: StageConfig = StageConfig(epochs=10, batch_size=1024, patience=2)
    pretrain: PretrainConfig = PretrainConfig(epochs=20, batch_size=256, warmup_ratio=0.05)
    finetune_lm: StageConfig = StageConfig(epochs=5, batch_size=256, patience=1)
    finetune_ctr: StageConfig = StageConfig(epochs=10, batch_size=1024, patience=2)
    seed: int = 42
    device: str = "auto"  # auto: cuda when present, else cpu; or an explicit torch device string
    # true: bf16/fp16 autocast on CUDA, float32 on CPU; "bf16": bf16 autocast on any device (pays on a CPU
    # with native bf16, AVX512-BF16 or AMX: see the README's training cost); false: float32 everywhere
    amp: bool | Literal["bf16"] = True
    num_threads: int | None = None  # torch CPU threads (None: torch's default)

    def config_hash(self) -> str:
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


PROFILES: dict[str, dict[str, Any]] = {
    "default": {},
    # Minutes on 2 CPU cores, small models; what the test suite runs on real MovieLens-100K.
    "smoke": {
        "backbone_preset": "smoke",
        "backbone_config": {},
        "max_len": 80,
        "prompt": {"n_prompts": 4, "hidden": 32},
        "baseline": {"epochs": 3, "batch_size": 512, "patience": 1},
        "pretrain": {"epochs": 2, "batch_size": 64, "max_train_samples": 3000, "max_eval_samples": 1000,
                     "lr_lm": 5e-4, "lr_ctr": 1e-2, "checkpoint_every": 20},
        "finetune_lm": {"epochs": 1, "batch_size": 64, "max_train_samples": 3000, "max_eval_samples": 1000},
        "finetune_ctr": {"epochs": 3, "batch_size": 512, "patience": 1},
    },
    # Every stage on every training row of MovieLens-100K within ~15 minutes on 2 CPU cores: one
    # epoch of PA-MLM and of LM finetuning (the LM side is what costs; benchmarks/bench_training_cost.py).
    # PA-MLM's CTR side at the authors' 1e-3: at 1e-2 the embeddings drift towards reconstructing the
    # text and the CTR-only model lost 0.014 AUC. LM finetuning: the fresh heads, the backbone and `a`
    # at 3e-3 (1e-3 left the fused model 0.005 AUC below the plain backbone, its CTR branch weaker
    # still), validated 4 times on the whole validation split, the best checkpoint kept.
    "demo": {
        "backbone_config": {"embedding_dim": 16, "cross_layers": 3, "hidden_units": [256, 128]},
        "max_len": 80,
        "prompt": {"n_prompts": 10, "hidden": 64},
        "baseline": {"epochs": 5, "batch_size": 1024},
        "pretrain": {"epochs": 1, "batch_size": 128, "max_eval_samples": 2000, "lr_lm": 5e-4, "lr_ctr": 1e-3},
        "finetune_lm": {"epochs": 1, "batch_size": 128, "evals_per_epoch": 4, "lr_lm": 1e-4, "lr_ctr": 3e-3},
        "finetune_ctr": {"epochs": 5, "batch_size": 1024},
    },
    # The authors' MovieLens settings (GPU): RoBERTa-base, batch 1024, 20 epochs of PA-MLM.
    "paper": {
        "plm": "roberta-base",
        "max_len": 128,
        "pretrain": {"epochs": 20, "batch_size": 1024, "lr_lm": 5e-5, "lr_ctr": 1e-3, "warmup_ratio": 0.05,
                     "schedule": "cosine"},
        "finetune_lm": {"epochs": 5, "batch_size": 256, "lr_lm": 5e-5, "lr_ctr": 1e-3},
    },
}


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "backbone_config":
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _dotted(overrides: dict[str, Any]) -> dict:
    nested: dict = {}
    for key, value in overrides.items():
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


class ConfigError(ValueError):
    """A bad setting (``--set`` key or value), in one line: each problem's key, and for an unknown key
    the keys its section has (the CLI prints it as ``error: ...``, exit 2)."""


def _section(loc: tuple) -> tuple[str, list[str]]:
    """The dotted name of the section ``loc`` lies in and that section's setting names."""
    model: type[BaseModel] = TrainConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            break
        model = field.annotation
    return ".".join(map(str, loc[:-1])), sorted(model.model_fields)


def _validated(raw: dict[str, Any]) -> TrainConfig:
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            key = ".".join(map(str, e["loc"])) or "config"
            if e["type"] == "extra_forbidden":
                section, known = _section(e["loc"])
                problems.append(f"{key}: unknown setting; {'the settings of ' + section if section else 'settings'}: "
                                f"{', '.join(known)}")
            else:
                problems.append(f"{key}={e.get('input')!r}: {e['msg']}")
        raise ConfigError("bad training setting(s): " + "; ".join(problems)) from None


def check_profile(name: str) -> str:
    """``name`` if it is a training profile, else a ValueError naming the known ones."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; known: {sorted(PROFILES)}")
    return name


def check_method(name: str) -> str:
    """``name`` if it is a training method, else a ValueError naming the known ones."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    return name


def load_config(profile: str = "default", overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults <- profile <- overrides (dotted keys allowed). Unknown keys raise."""
    check_profile(profile)
    nested = _dotted(overrides or {})
    profile_raw = dict(PROFILES[profile])
    if "backbone" in nested and "backbone_config" in profile_raw and "backbone_config" not in nested:
        # a profile's backbone settings are written for its default backbone (DCNv2's cross_layers);
        # another backbone keeps the ones it has (embedding_dim, hidden_units). Explicit
        # backbone_config overrides stay strict.
        profile_raw["backbone_config"] = _known_backbone_keys(nested["backbone"], profile_raw["backbone_config"])
    raw = _merge(_merge(TrainConfig().model_dump(), profile_raw), nested)
    raw["profile"] = profile
    return _validated(raw)


def build_config(profile: str, method: str | None = None, backbone: str | None = None,
                 overrides: dict[str, Any] | None = None, seed: int | None = None) -> TrainConfig:
    """The one profile -> config builder (flows, CLI, benchmarks, bundles): the profile with the
    method, backbone, seed and dotted ``overrides`` (``{"pretrain.epochs": 2}``) on top; a backbone's
    unknown setting is refused here, before any data is read."""
    from models.ctr import ctr_config

    merged = dict(overrides or {})
    if method:
        merged["method"] = method
    if backbone:
        merged["backbone"] = backbone
    if seed is not None:
        merged["seed"] = seed
    cfg = load_config(profile, merged)
    ctr_config(cfg.backbone, cfg.backbone_config, cfg.backbone_preset)
    return cfg


def with_overrides(cfg: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """``cfg`` with dotted ``overrides`` on top (a stored run config, say); unknown keys raise."""
    return _validated(_merge(cfg.model_dump(), _dotted(overrides))) if overrides else cfg


def _known_backbone_keys(backbone: str, settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` less the keys only other backbones have; a key no backbone has (a typo) stays,
    so building the model still rejects it."""
    import dataclasses

    from models.ctr import CTR_MODELS

    if backbone not in CTR_MODELS:  # the model builder names the known ones
        return settings
    own = {f.name for f in dataclasses.fields(CTR_MODELS[backbone].config_cls)}
    others = {f.name for m in CTR_MODELS.values() for f in dataclasses.fields(m.config_cls)} - own
    return {k: v for k, v in settings.items() if k not in others}


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["pretrain.epochs=2", "backbone=autoint"]`` -> dict, values parsed as JSON when they parse."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out
