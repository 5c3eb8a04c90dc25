"""Shared CTR building blocks, one concern per file (FuxiCTR-style)."""

from models.layers.attention import InteractingLayer
from models.layers.crossnet import CrossNet, CrossNetV2
from models.layers.embedding import FeatureEmbedding
from models.layers.interaction import CIN, FMInteraction, InnerProduct, OuterProduct
from models.layers.mlp import MLP

__all__ = [
    "CIN",
    "CrossNet",
    "CrossNetV2",
    "FMInteraction",
    "FeatureEmbedding",
    "InnerProduct",
    "InteractingLayer",
    "MLP",
    "OuterProduct",
]
