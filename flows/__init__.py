"""Prefect flows: one flow per platform stage (``flows/<verb>_<noun>.py``) and ``train_pipeline``
chaining them. Tasks are thin wrappers over the library code in ingestion/, validation/,
feature_repo/, models/, serving/ and benchmarks/; ``flows.common`` holds the typed parameters and
the task caching that lets a re-run resume at the stage that failed.

Importing this package applies the project's environment defaults (``core.settings``) before
Prefect is imported: a deployment that runs ``flows/x.py:fn`` gets the same Prefect home, no
telemetry and an offline Hugging Face hub as the CLI.
"""

from core.settings import apply_environment_defaults

apply_environment_defaults()
