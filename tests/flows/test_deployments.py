"""prefect.yaml: every entrypoint loads and takes its parameters, and `prefect deploy --all` puts
the deployments with their cron schedules on a real Prefect server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint

from core.settings import REPO_ROOT

PREFECT_YAML = REPO_ROOT / "prefect.yaml"
EXPECTED = {  # deployment -> (flow name, cron or None)
    "nightly-data": ("update-data", "0 2 * * *"),
    "nightly-data-quality": ("validate-data", "30 2 * * *"),
    "weekly-retrain": ("retrain-model", "0 3 * * 1"),
    "full-pipeline": ("train-pipeline", None),
    "benchmark": ("run-benchmark", None),
}


@pytest.fixture(scope="module")
def project() -> dict:
    return yaml.safe_load(PREFECT_YAML.read_text())


def test_every_entrypoint_loads_and_its_parameters_validate(project):
    deployments = {d["name"]: d for d in project["deployments"]}
    assert set(deployments) == set(EXPECTED)
    pool = project["definitions"]["work_pools"]["local_process"]["name"]
    for name, d in deployments.items():
        flow = load_flow_from_entrypoint(d["entrypoint"], use_placeholder_flow=False)
        assert flow.name == EXPECTED[name][0]
        flow.validate_parameters(d.get("parameters") or {})  # raises on a parameter the flow rejects
        assert d["work_pool"]["name"] == pool
        crons = [s["cron"] for s in d["schedules"]]
        assert crons == ([EXPECTED[name][1]] if EXPECTED[name][1] else [])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prefect(env: dict, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "prefect", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"prefect {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """`prefect server start` on 127.0.0.1 with its own PREFECT_HOME; yields (api url, env)."""
    home = tmp_path_factory.mktemp("prefect_server")
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": api, "PREFECT_UI_ENABLED": "false",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "PREFECT_LOGGING_LEVEL": "WARNING"}
    log = (home / "server.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (home / "server.log").read_text()[-3000:]
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "prefect server did not answer /api/health within 120 s"
            time.sleep(1)
        yield api, env
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
        log.close()


def test_deploy_all_registers_the_deployments_and_cron_schedules(project, prefect_server):
    api, env = prefect_server
    pool = project["definitions"]["work_pools"]["local_process"]["name"]
    _prefect(env, "work-pool", "create", pool, "--type", "process")
    _prefect(env, "--no-prompt", "deploy", "--all")

    found = httpx.post(f"{api}/deployments/filter", json={}, timeout=30).json()
    flows = {f["id"]: f["name"] for f in httpx.post(f"{api}/flows/filter", json={}, timeout=30).json()}
    by_name = {d["name"]: d for d in found}
    assert set(by_name) == set(EXPECTED)
    for name, (flow_name, cron) in EXPECTED.items():
        d = by_name[name]
        assert flows[d["flow_id"]] == flow_name
        assert d["work_pool_name"] == pool
        assert Path(d["path"] or REPO_ROOT).resolve() == REPO_ROOT  # the worker runs from the repository
        schedules = [(s["schedule"]["cron"], s["schedule"]["timezone"], s["active"]) for s in d["schedules"]]
        assert schedules == ([(cron, "UTC", True)] if cron else [])
    assert by_name["weekly-retrain"]["parameters"] == {"dataset": "movielens-100k", "profile": "demo",
                                                       "window": "growing", "holdout_days": 7, "margin": 0.001}
    assert by_name["full-pipeline"]["parameters"] == {"dataset": "movielens-100k", "profile": "demo",
                                                      "method": "clickprompt"}
