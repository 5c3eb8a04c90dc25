"""``clickprompt ui``: the MLflow UI on loopback over the project's store."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from cli import main
from cli.serve import mlflow_ui_available


def test_ui_without_full_mlflow_names_the_conflict_and_the_store(paths, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr("cli.serve.mlflow_ui_available", lambda: False)
    assert main(["ui"]) == 2
    err = capsys.readouterr().err
    assert "mlflow-tracing==3.18.0" in err and "pyarrow<26" in err
    assert f"--backend-store-uri sqlite:///{paths.home / 'mlruns.db'} --host 127.0.0.1" in err


@pytest.mark.skipif(not mlflow_ui_available(), reason="the MLflow UI needs the full `mlflow` package; only "
                    "mlflow-skinny co-installs with the pinned stack (see README, Runs and models in MLflow)")
def test_ui_serves_its_page_on_loopback(paths):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "cli", "ui", "--port", str(port)],
                            env={**os.environ, "CLICKPROMPT_HOME": str(paths.home)})
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "the UI did not start"
                time.sleep(0.5)
        assert r.status_code == 200 and "<html" in r.text.lower()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
