"""Prefect flows: one flow per platform stage (``flows/<verb>_<noun>.py``) and ``train_pipeline``
chaining them. Tasks are thin wrappers over the library code in clickprompt/, validation/,
feature_repo/ and models/; ``flows.common`` holds the typed parameters and the task caching
that lets a re-run resume at the stage that failed.
"""
