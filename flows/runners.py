"""The task runner the flows fan independent tasks out on (``CLICKPROMPT_TASK_RUNNER``, core.backends).

``local`` (the default): Prefect's thread pool, and the fan-outs run their tasks one after the
other in the flow's own process, as they always have (training uses every core itself).
``dask``: a local Dask cluster of ``CLICKPROMPT_DASK_WORKERS`` worker processes, started with the
flow run and stopped after it; ``dask://host:8786`` (or ``tcp://``): a running Dask scheduler
(``dask scheduler`` + ``dask worker`` on the cluster's machines, each with this project installed
and the same ``CLICKPROMPT_HOME`` mounted). The tasks are the same either way: only where they run differs.
"""

from __future__ import annotations

import os

from core.backends import Backends


def task_runner(backends: Backends | None = None):
    """The Prefect task runner for ``backends.task_runner``."""
    backends = backends or Backends.from_env()
    if backends.task_runner == "local":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner()
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise ImportError("CLICKPROMPT_TASK_RUNNER=dask needs prefect-dask: pip install -e '.[dask]'") from None
    if backends.task_runner == "dask":
        # one torch thread per worker core share: workers x threads never oversubscribe the host
        threads = max(1, (os.cpu_count() or 1) // backends.dask_workers)
        return DaskTaskRunner(cluster_kwargs={"n_workers": backends.dask_workers, "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": None,
                                              "env": {"OMP_NUM_THREADS": str(threads)}})
    address = backends.task_runner.replace("dask://", "tcp://", 1)
    return DaskTaskRunner(address=address)


def fans_out(backends: Backends | None = None) -> bool:
    """Whether independent tasks are submitted together (a distributed runner) or run in turn."""
    return (backends or Backends.from_env()).task_runner != "local"


def gather(task, calls: list[tuple]) -> list:
    """``task(*args)`` for each args tuple of ``calls``, submitted together to the flow's task
    runner; the results in order."""
    futures = [task.submit(*args) for args in calls]
    return [f.result() for f in futures]
