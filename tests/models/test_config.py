"""Training configs: profiles, dotted overrides, and what is rejected."""

import pytest

from models.ctr import ctr_config
from models.train.config import ConfigError, load_config


def test_a_profiles_backbone_settings_carry_over_to_another_backbone_where_they_fit():
    assert load_config("demo").backbone_config == {"embedding_dim": 16, "cross_layers": 3, "hidden_units": [256, 128]}
    for backbone in ("dnn", "autoint", "deepfm"):  # no cross layers: the rest applies, the model builds
        cfg = load_config("demo", {"backbone": backbone})
        assert cfg.backbone_config == {"embedding_dim": 16, "hidden_units": [256, 128]}
        assert ctr_config(backbone, cfg.backbone_config).embedding_dim == 16


def test_a_typo_in_a_profiles_backbone_settings_is_still_rejected(monkeypatch):
    from models.train import config

    monkeypatch.setitem(config.PROFILES, "typo", {"backbone_config": {"cross_layer": 3, "embedding_dim": 16}})
    for backbone in ("dcnv2", "dnn"):
        cfg = load_config("typo", {"backbone": backbone})
        assert cfg.backbone_config == {"cross_layer": 3, "embedding_dim": 16}
        with pytest.raises(ValueError, match=r"keys \['cross_layer'\]"):
            ctr_config(backbone, cfg.backbone_config)


def test_explicit_backbone_settings_stay_strict():
    cfg = load_config("demo", {"backbone": "dnn", "backbone_config": {"cross_layers": 2}})
    with pytest.raises(ValueError, match=r"unknown DNNConfig keys \['cross_layers'\]"):
        ctr_config(cfg.backbone, cfg.backbone_config)


def test_dotted_overrides_and_unknown_keys():
    cfg = load_config("smoke", {"pretrain.epochs": 3, "seed": 7})
    assert cfg.pretrain.epochs == 3 and cfg.seed == 7 and cfg.pretrain.batch_size == 64  # the rest from smoke
    # one line (the CLI's `error: ...`): the key, and for an unknown one the keys its section has
    with pytest.raises(ConfigError, match=r"pretrain.epoch: unknown setting; the settings of pretrain: .*\bepochs\b"):
        load_config("smoke", {"pretrain.epoch": 3})
    with pytest.raises(ConfigError, match=r"pretrain.epochs='abc': Input should be a valid integer") as bad:
        load_config("smoke", {"pretrain.epochs": "abc", "seed": 7})
    assert "\n" not in str(bad.value)
    with pytest.raises(ConfigError, match=r"^bad training setting\(s\): lr: unknown setting; settings: .*\bseed\b"):
        load_config("smoke", {"lr": 1})
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        load_config("fast")
