"""CTR layers and backbones: shapes, gradients, config strictness, layer semantics."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import Tensor

from models.ctr import CTR_MODELS, FM, DCNv2, DCNv2Config, build_ctr_model, ctr_config
from models.encoding import FieldInfo
from models.layers import CIN, CrossNet, CrossNetV2, FeatureEmbedding, FMInteraction, InnerProduct, InteractingLayer


@pytest.mark.parametrize("name", sorted(CTR_MODELS))
def test_forward_shapes_and_backward(name: str, ctr_fields: list[FieldInfo], ctr_batch: dict[str, Tensor]) -> None:
    torch.manual_seed(0)
    model = build_ctr_model(name, ctr_fields, preset="smoke")
    out = model(ctr_batch)
    n = len(ctr_batch["user_id"])
    assert out.logit.shape == (n,)
    assert out.h.shape == (n, model.output_dim)
    assert model.head.in_features == model.output_dim and model.head.out_features == 1
    # logit is the head applied to h: h really is the representation before the output layer
    torch.testing.assert_close(out.logit, model.head(out.h).squeeze(-1))
    torch.nn.functional.binary_cross_entropy_with_logits(out.logit, torch.ones(n)).backward()
    for field_name, table in model.embedding.tables.items():
        assert table.weight.grad is not None and table.weight.grad.abs().sum() > 0, field_name
    assert model.param_count() == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(CTR_MODELS))
def test_unknown_config_key_raises(name: str, ctr_fields: list[FieldInfo]) -> None:
    with pytest.raises(ValueError, match="embeding_dim"):
        build_ctr_model(name, ctr_fields, {"embeding_dim": 8})


def test_unknown_model_and_preset_raise(ctr_fields: list[FieldInfo]) -> None:
    with pytest.raises(ValueError, match="unknown CTR model"):
        build_ctr_model("dcn_v3", ctr_fields)
    with pytest.raises(ValueError, match="unknown preset"):
        build_ctr_model("dnn", ctr_fields, preset="tiny")


def test_dcnv2_default_is_papers_movielens_setting(ctr_fields: list[FieldInfo], ctr_batch: dict[str, Tensor]) -> None:
    cfg = ctr_config("dcnv2")
    assert (cfg.embedding_dim, cfg.cross_layers, cfg.hidden_units) == (32, 6, [256] * 6)
    model = DCNv2(ctr_fields, cfg)
    assert len(model.cross.layers) == 6 and model.cross.layers[0].weight.shape == (4 * 32, 4 * 32)
    # h = concat(cross-net output (F*D), MLP output (256))
    assert model.output_dim == 4 * 32 + 256
    x0 = model.embedding(ctr_batch).flatten(1)
    h = model.represent(ctr_batch)
    torch.testing.assert_close(h[:, : 4 * 32], model.cross(x0))
    torch.testing.assert_close(h[:, 4 * 32 :], model.mlp(x0))


def test_overrides_apply_on_preset(ctr_fields: list[FieldInfo]) -> None:
    model = build_ctr_model("dcnv2", ctr_fields, {"cross_layers": 1}, preset="smoke")
    assert len(model.cross.layers) == 1 and model.embedding.dim == DCNv2Config.smoke().embedding_dim


def test_feature_embedding_pools_multi_and_scales_numeric(ctr_fields: list[FieldInfo]) -> None:
    emb = FeatureEmbedding(ctr_fields, dim=4)
    x = {
        "user_id": torch.tensor([3, 0]),
        "gender": torch.tensor([4, 1]),
        "genres": torch.tensor([[3, 5, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]]),
        "year": torch.tensor([2.0, -1.0]),
    }
    out = emb(x)
    assert out.shape == (2, 4, 4)
    tables = emb.tables
    torch.testing.assert_close(out[0, 0], tables["user_id"].weight[3])
    torch.testing.assert_close(out[1, 0], torch.zeros(4))  # PAD row is zero
    torch.testing.assert_close(out[0, 2], (tables["genres"].weight[3] + tables["genres"].weight[5]) / 2)
    torch.testing.assert_close(out[1, 2], torch.zeros(4))  # all-pad row pools to zero, no NaN
    torch.testing.assert_close(out[:, 3], torch.tensor([[2.0], [-1.0]]) * tables["year"].weight[0])


def test_fm_is_exact_factorization_machine(ctr_fields: list[FieldInfo], ctr_batch: dict[str, Tensor]) -> None:
    model = FM(ctr_fields, ctr_config("fm", preset="smoke"))
    v = model.embedding(ctr_batch)  # (B, F, D)
    w = model.linear(ctr_batch).squeeze(-1)  # (B, F)
    pairwise = sum((v[:, i] * v[:, j]).sum(-1) for i, j in itertools.combinations(range(v.shape[1]), 2))
    torch.testing.assert_close(model(ctr_batch).logit, w.sum(-1) + pairwise)
    torch.testing.assert_close(FMInteraction()(v).sum(-1), pairwise)


def test_cross_layers_match_their_formulas() -> None:
    torch.manual_seed(0)
    x0 = torch.randn(3, 5)
    v2 = CrossNetV2(5, 1)
    lin = v2.layers[0]
    torch.testing.assert_close(v2(x0), x0 * (x0 @ lin.weight.T + lin.bias) + x0)
    v1 = CrossNet(5, 1)
    torch.testing.assert_close(v1(x0), x0 * (x0 @ v1.w[0]).unsqueeze(-1) + v1.b[0] + x0)


def test_interaction_layer_shapes() -> None:
    emb = torch.randn(2, 4, 6)
    assert InnerProduct(4)(emb).shape == (2, 6)
    torch.testing.assert_close(InnerProduct(4)(emb)[:, 0], (emb[:, 0] * emb[:, 1]).sum(-1))
    cin = CIN(4, [6, 4], split_half=True)
    assert cin.output_dim == 3 + 4 and cin(emb).shape == (2, 7)
    att = InteractingLayer(6, 8, n_heads=2)
    assert att(emb).shape == (2, 4, 8) and (att(emb) >= 0).all()
