"""CTR backbones, found by name: ``build_ctr_model("dcnv2", fields, {"cross_layers": 3})``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from models.ctr.autoint import AutoInt, AutoIntConfig
from models.ctr.base import CTRModel, CTROutput, config_from_dict, count_params
from models.ctr.dcn import DCN, DCNConfig
from models.ctr.dcnv2 import DCNv2, DCNv2Config
from models.ctr.deepfm import DeepFM, DeepFMConfig
from models.ctr.dnn import DNN, DNNConfig
from models.ctr.fm import FM, FMConfig
from models.ctr.pnn import PNN, PNNConfig
from models.ctr.xdeepfm import XDeepFM, XDeepFMConfig
from models.encoding import FieldInfo

CTR_MODELS: dict[str, type[CTRModel]] = {
    "dcnv2": DCNv2,
    "dnn": DNN,
    "autoint": AutoInt,
    "fm": FM,
    "deepfm": DeepFM,
    "dcn": DCN,
    "xdeepfm": XDeepFM,
    "pnn": PNN,
}
PRESETS = ("default", "smoke")  # default = paper-scale settings; smoke = tiny, for tests


def ctr_config(name: str, config: object | Mapping[str, Any] | None = None, preset: str = "default") -> Any:
    """The typed config of model ``name``: a config instance as is, or ``preset`` + dict overrides.

    Unknown model names, presets or config keys raise ValueError.
    """
    cls = _model_cls(name)
    if isinstance(config, cls.config_cls):
        return config
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {PRESETS}")
    if config is not None and not isinstance(config, Mapping):
        raise TypeError(f"config for {name!r} must be {cls.config_cls.__name__}, a mapping or None")
    base = cls.config_cls.smoke() if preset == "smoke" else cls.config_cls()
    return config_from_dict(cls.config_cls, config, base)


def build_ctr_model(
    name: str,
    fields: list[FieldInfo],
    config: object | Mapping[str, Any] | None = None,
    preset: str = "default",
) -> CTRModel:
    """Registry lookup + typed config (see ``ctr_config``) -> a freshly initialised backbone."""
    return _model_cls(name)(fields, ctr_config(name, config, preset))


def _model_cls(name: str) -> type[CTRModel]:
    if name not in CTR_MODELS:
        raise ValueError(f"unknown CTR model {name!r}; known: {sorted(CTR_MODELS)}")
    return CTR_MODELS[name]


__all__ = [
    "CTR_MODELS",
    "PRESETS",
    "AutoInt",
    "AutoIntConfig",
    "CTRModel",
    "CTROutput",
    "DCN",
    "DCNConfig",
    "DCNv2",
    "DCNv2Config",
    "DNN",
    "DNNConfig",
    "DeepFM",
    "DeepFMConfig",
    "FM",
    "FMConfig",
    "PNN",
    "PNNConfig",
    "XDeepFM",
    "XDeepFMConfig",
    "build_ctr_model",
    "config_from_dict",
    "count_params",
    "ctr_config",
]
