"""Feature services: the feature sets each model version trains and serves on (versioned names)."""

from feast import FeatureService, FeatureView

from core.names import CLICKPROMPT_SERVICE, CTR_SERVICE


def ctr_service(profiles: list[FeatureView]) -> FeatureService:
    """ID features only: what a CTR-only model needs at serving time (no language model)."""
    return FeatureService(
        name=CTR_SERVICE,
        features=profiles,
        description="ID features for CTR-only models",
    )


def clickprompt_service(profiles: list[FeatureView], texts: list[FeatureView]) -> FeatureService:
    """ID features + rendered text: what ClickPrompt / ALT pretraining and LM finetuning need."""
    return FeatureService(
        name=CLICKPROMPT_SERVICE,
        features=[*profiles, *texts],
        description="ID features and text views for ClickPrompt / ALT",
    )
