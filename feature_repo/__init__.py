"""The Feast feature repo: where features are defined (entities, sources, views, services).

Definitions are built from a data set spec by small functions (``definitions.build``), so a new
data set needs no change here. ``store.py`` opens the store with absolute paths (works from any
working directory); ``training_sets.py`` builds point-in-time-correct train/valid/test sets;
``online.py`` materializes and reads the SQLite online store.
"""

import warnings

# Importing Feast puts simplefilter("once", DeprecationWarning / RuntimeWarning) in front of the
# process's own filters (feast/feature_view.py, repo_config.py, ...): ibis's and GX's deprecations
# then reached the logs of every CLI command despite its "ignore". Every Feast import of this project
# is inside this package, so Feast is imported here first, with the filters put back afterwards.
with warnings.catch_warnings():
    import feast  # noqa: F401
