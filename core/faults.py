"""Named kill points of the writers, for fault-injection tests.

``fault_point("after:batch-commit")`` ends the process there with ``os._exit(137)`` (what a
``kill -9`` leaves: no cleanup, no finally blocks, open files as they are) when the environment
variable ``CLICKPROMPT_FAULT`` names that point, and does nothing otherwise. The points of the
data path: ``after:ingest-commit``, ``after:batch-commit``, ``during:snapshot-export:<table>``
(the temp file written, not renamed), ``after:snapshot-export:<table>``, ``before:snapshot-manifest``,
``after:snapshot-manifest``.
"""

from __future__ import annotations

import os

FAULT_ENV = "CLICKPROMPT_FAULT"
KILLED = 137


def fault_point(name: str) -> None:
    if os.environ.get(FAULT_ENV) == name:
        os._exit(KILLED)
