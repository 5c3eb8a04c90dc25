"""The Feast feature repo: where features are defined (entities, sources, views, services).

Definitions are built from a data set spec by small functions (``definitions.build``), so a new
data set needs no change here. ``store.py`` opens the store with absolute paths (works from any
working directory); ``training_sets.py`` builds point-in-time-correct train/valid/test sets;
``online.py`` materializes and reads the SQLite online store.
"""
