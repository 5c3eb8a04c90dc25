"""The layers import one way: core -> data path -> features and gates -> models -> serving ->
benchmarks -> flows -> CLI. Read from the source (every import, function-level ones included),
so a lazy import cannot hide an upward dependency."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from core.settings import REPO_ROOT

# package -> the project packages it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "core": set(),  # settings, paths, the spec, the text template, io helpers
    "ingestion": {"core"},  # where data enters; its quality gate is passed in
    "validation": {"core"},  # Great Expectations suites
    "feature_repo": {"core"},  # Feast definitions, training sets, online store
    "models": {"core"},  # CTR models, ClickPrompt, ALT, the trainer: frames in, weights out
    "serving": {"core", "feature_repo", "models"},  # registry, as-of scoring, the HTTP server
    "benchmarks": {"core", "ingestion", "validation", "feature_repo", "models", "serving"},
    "flows": {"core", "ingestion", "validation", "feature_repo", "models", "serving", "benchmarks"},
    "cli": {"core", "ingestion", "validation", "feature_repo", "models", "serving", "benchmarks", "flows"},
}


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, dotted module) of every import in a module, at any depth."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def upward_imports(root: Path, allowed: dict[str, set[str]]) -> list[str]:
    """``file:line imports name (package -> package)`` for each import a layer may not make."""
    problems = []
    for package, may in allowed.items():
        for path in sorted((root / package).rglob("*.py")):
            for line, module in imported_modules(ast.parse(path.read_text(encoding="utf-8"), str(path))):
                target = module.split(".")[0]
                if target in allowed and target != package and target not in may:
                    problems.append(f"{path.relative_to(root)}:{line} imports {module} ({package} -> {target})")
    return problems


def test_no_layer_imports_a_higher_one():
    assert upward_imports(REPO_ROOT, ALLOWED) == []


def test_every_package_is_in_a_layer():
    packages = {p.parent.name for p in REPO_ROOT.glob("*/__init__.py")}
    assert packages == set(ALLOWED), "a new top-level package needs its place in ALLOWED"


def test_the_check_names_file_line_and_name_of_a_planted_upward_import(tmp_path):
    for package in ALLOWED:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "core" / "paths.py").write_text("import os\n\n\ndef f():\n    from models.train.trainer import Trainer\n")
    (tmp_path / "models" / "ok.py").write_text("from core.settings import Paths\nimport torch\n")
    (tmp_path / "feature_repo" / "bad.py").write_text("import ingestion.warehouse\n")
    assert upward_imports(tmp_path, ALLOWED) == [
        "core/paths.py:5 imports models.train.trainer (core -> models)",
        "feature_repo/bad.py:1 imports ingestion.warehouse (feature_repo -> ingestion)",
    ]


def test_importing_the_core_sets_no_environment():
    """The core imports nothing of the project and changes no environment variable on import; the
    entry points (CLI, flows) apply the defaults."""
    script = ("import json, os; before = dict(os.environ); "
              "import core.settings, core.spec, core.template, core.io, core.names, core.snapshots, core.training_data; "
              "import models.encoding, models.train.trainer; "
              "print(json.dumps(sorted(k for k in set(os.environ) | set(before) if os.environ.get(k) != before.get(k))))")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "HF_", "TRANSFORMERS_", "FEAST_"))}
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
