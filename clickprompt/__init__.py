"""ClickPrompt platform core: settings, data path (fetch, load, warehouse, text), CLI.

Importing this package sets the project's environment defaults before any
Prefect / Feast / GX import happens, so a user never has to export them.
"""

from clickprompt.settings import apply_environment_defaults

apply_environment_defaults()

__version__ = "0.1.0"
