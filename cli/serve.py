"""``clickprompt registry | serve | predict | score``: the model registry and serving."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

from cli.common import entity_id, port, positive_float, positive_int, print_json
from core.locks import Busy
from core.settings import Paths
from models.train.stages import REGISTERED_STAGE, REGISTRABLE_STAGES, Stage

# --- model registry, serving, scoring ---------------------------------------------------


def _version_line(v: dict) -> str:
    m = v["metrics"]
    auc = "n/a" if m.get("auc") is None else f"{m['auc']:.4f}"
    ll = "n/a" if m.get("logloss") is None else f"{m['logloss']:.4f}"
    return (f"{v['name']:<8} v{v['version']:<4} {v['stage']:<10} {v['training_stage']:<18} {v['method'] or '-':<11} "
            f"{v['backbone'] or '-':<8} AUC {auc}  LogLoss {ll}  {v['created_at']}")


def cmd_registry_register(args, paths: Paths) -> int:
    from serving.registry import Registry

    run = Path(args.run)
    if not run.is_absolute() and not run.exists() and (paths.home / run).exists():
        run = paths.home / run  # the README's artifacts/runs/<id>, given relative to the project home
    registry = Registry(paths)
    already = registry.registered_as(run, stage=args.stage, name=args.name)
    mv = registry.register(run, stage=args.stage, name=args.name).to_dict()
    if args.json:
        print_json({**mv, "already_registered": already is not None})
    else:
        print(f"already registered as {mv['name']} v{mv['version']} ({mv['stage']}): {mv['artifact_dir']}" if already
              else f"registered {mv['name']} v{mv['version']} as candidate: {mv['artifact_dir']}")
        print(_version_line(mv))
    return 0


def cmd_registry_list(args, paths: Paths) -> int:
    from serving.registry import Registry

    versions = [v.to_dict() for v in Registry(paths).list(args.name)]
    if args.json:
        print_json(versions)
    elif not versions:
        print(f"no registered models in {paths.registry}")
    else:
        for v in versions:
            print(_version_line(v))
    return 0


def cmd_registry_show(args, paths: Paths) -> int:
    from serving.registry import Registry

    mv = Registry(paths).get(args.version, args.name).to_dict()
    if args.json:
        print_json(mv)
    else:
        for key, value in mv.items():
            print(f"{key:<17} {json.dumps(value) if isinstance(value, dict) else value}")
    return 0


def cmd_registry_promotions(args, paths: Paths) -> int:
    """The promotion log of a model: every decision, promoted or refused, with both figures and their basis."""
    from serving.registry import Registry

    log_ = Registry(paths).promotions(args.name)
    if args.json:
        print_json(log_)
        return 0
    if not log_:
        print(f"no promotion decision for model {args.name!r} yet")
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    for e in log_:
        outcome = "promoted" if e["promoted"] else "refused"
        basis = e.get("basis") or "own test splits"
        against = ("no production version" if e["previous_version"] is None
                   else f"production v{e['previous_version']} {fmt(e['production_value'])}")
        reason = e["reason"].removesuffix(f" [{basis}]")  # the basis is said once, in the brackets before it
        print(f"{e['decided_at']}  v{e['version']} {outcome}{' (forced)' if e.get('forced') else ''}: {e['metric']} "
              f"{fmt(e['candidate_value'])} vs {against} [{basis}; margin {e.get('margin', 0)}] - {reason}")
    return 0


def cmd_registry_promote(args, paths: Paths) -> int:
    from serving.registry import Registry

    result = Registry(paths).promote(args.version, name=args.name, metric=args.metric, force=args.force)
    if args.json:
        print_json(result.to_dict())
    if result.already:  # a no-op (exit 0), not a refusal
        if not args.json:
            print(result.reason)
        return 0
    if not result.promoted:
        print(f"promotion refused: {result.reason}", file=sys.stderr)
        return 1
    if not args.json:
        print(f"promoted: {result.reason}")
    return 0


def cmd_serve(args, paths: Paths) -> int:
    from serving.registry import Registry
    from serving.server import serve

    try:  # only a warning: a registry that cannot be read now is the server's to report (503, degraded)
        registry = Registry(paths)
        held = bool(registry.list(args.name))
        known = [] if held else sorted({v.name for v in registry.list()})
    except Exception:  # noqa: BLE001 - whatever the store raises, the server starts and says it
        held = True
    if not held:  # it serves anyway (503 until one is promoted), but a typo should show
        print(f"warning: no model named {args.name!r} in the registry yet (registered: {', '.join(known) or 'none'}); "
              "the server answers 503 until a version of it is promoted", file=sys.stderr)

    _check_port_free(args.host, args.port)  # one line and exit 3, not uvicorn's "ERROR: [Errno 98]"
    serve(paths, host=args.host, port=args.port, name=args.name, poll_seconds=args.poll_seconds,
          access_log=args.access_log, workers=args.workers)
    return 0


class PortInUse(Busy):
    """The port is taken (exit 3, as for any busy resource)."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(f"port {port} on {host}", {})
        self.args = (f"port {port} on {host} is in use (another server?): stop it, or serve on another with --port",)


def _check_port_free(host: str, port: int) -> None:
    """Bind ``host:port`` as uvicorn will (IPv6 only for a host with ':', SO_REUSEADDR) and let it go;
    ``PortInUse`` if taken. Anything else (a host that does not resolve, an address not here) is
    uvicorn's to report, as before."""
    import errno
    import socket

    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:  # socket.gaierror included
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(host, port) from None


def cmd_predict(args, paths: Paths) -> int:
    from serving.registry import Registry

    Registry(paths).require_production(args.name)  # before Feast and torch load: 1 s, not 7, to say there is none
    from serving.server import Predictor

    _, rows = Predictor(paths, args.name, poll_seconds=float("inf")).predict([(args.user_id, args.item_id)])
    row = rows[0]
    if args.json:
        print_json(row)
    else:
        unknown = [k for k, v in row["unknown"].items() if v] or ["none"]
        stamps = ", ".join(f"{k} {v or 'missing'}" for k, v in row["feature_timestamps"].items()) or \
            "none (the ids alone: the spec has no profile fields)"
        print(f"user {row['user_id']}, item {row['item_id']}: click probability {row['click_probability']:.6f} "
              f"({row['model_name']} v{row['model_version']}; features {stamps}; unknown: {', '.join(unknown)})")
    return 0


def cmd_score(args, paths: Paths) -> int:
    from serving.registry import Registry
    from serving.tables import check_scoring_files

    check_scoring_files(Path(args.input), Path(args.output))  # bad names first, then the model: before torch loads
    Registry(paths).require_production(args.name)  # (score_file loads the version itself)
    from serving.scoring import score_file

    summary = score_file(paths, Path(args.input), Path(args.output), name=args.name)
    if args.json:
        print_json(summary)
    else:
        print(f"scored {summary['rows']} row{'s' if summary['rows'] != 1 else ''} with {summary['model']} v{summary['model_version']} "
              f"(as of each row's event_timestamp) -> {summary['output']} in {summary['seconds']:.1f}s")
    return 0


UI_MISSING = ("the MLflow UI needs the full `mlflow` package, and only `mlflow-skinny` co-installs with this "
              "project's pins (mlflow 3.18.0 needs mlflow-tracing==3.18.0, which the package index lacks; every "
              "earlier mlflow 3.x needs pyarrow<26, pinned 26.0.1). Point any machine with `mlflow` at this store: "
              "mlflow ui --backend-store-uri {uri} --host 127.0.0.1")


def mlflow_ui_available() -> bool:
    """The UI server needs Flask and the UI's built pages, which ship with ``mlflow``, not ``mlflow-skinny``."""
    import importlib.util

    spec = importlib.util.find_spec("mlflow")
    if spec is None or importlib.util.find_spec("flask") is None:
        return False
    return (Path(spec.origin).parent / "server" / "js" / "build" / "index.html").is_file()


def cmd_ui(args, paths: Paths) -> int:
    """``mlflow ui`` on loopback over the project's store (runs, metrics, the model registry)."""
    import subprocess

    from serving.tracking import client, tracking_uri

    uri = tracking_uri(paths)
    if not mlflow_ui_available():
        print(f"error: {UI_MISSING.format(uri=uri)}", file=sys.stderr)
        return 2
    client(paths).search_experiments(max_results=1)  # creates / upgrades the local store before the UI reads it
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", args.host,
           "--port", str(args.port)]
    print(f"MLflow UI over {uri}: http://{args.host}:{args.port}", flush=True)
    return subprocess.call(cmd)


def add_commands(sub, add: Callable) -> None:
    reg = sub.add_parser("registry", help="the model registry").add_subparsers(dest="registry_cmd", required=True)
    p = add(reg, "register", cmd_registry_register, "freeze a run's stage as the next candidate version")
    p.add_argument("--run", required=True, help="run folder, e.g. artifacts/runs/<run-id>")
    p.add_argument("--stage", default=str(REGISTERED_STAGE), choices=[str(s) for s in REGISTRABLE_STAGES],
                   help=f"training stage to register (default {REGISTERED_STAGE}; "
                   f"{Stage.FINETUNE_WITH_LM}: the model that keeps the LM at serving)")
    p.add_argument("--name", default="ctr", help="model name (default ctr)")
    p.add_argument("--json", action="store_true", help="print the result as JSON (for scripts)")
    p = add(reg, "list", cmd_registry_list, "list registered versions")
    p.add_argument("--name", help="only this model name")
    p.add_argument("--json", action="store_true", help="print the result as JSON (for scripts)")
    p = add(reg, "show", cmd_registry_show, "show one version's record")
    p.add_argument("version", type=int)
    p.add_argument("--name", default="ctr")
    p.add_argument("--json", action="store_true", help="print the result as JSON (for scripts)")
    p = add(reg, "promotions", cmd_registry_promotions, "the promotion log: every decision, promoted or refused, "
            "with both figures, their basis and the margin")
    p.add_argument("--name", default="ctr", help="registered model name (default ctr)")
    p.add_argument("--json", action="store_true", help="print the result as JSON (for scripts)")
    p = add(reg, "promote", cmd_registry_promote,
            "make a version production if it beats the current one (exit 1 when refused)")
    p.add_argument("version", type=int)
    p.add_argument("--name", default="ctr")
    p.add_argument("--metric", default="auc", choices=["auc", "logloss"], help="auc: higher wins; logloss: lower wins")
    p.add_argument("--force", action="store_true", help="promote even if it does not beat production")
    p.add_argument("--json", action="store_true", help="print the result as JSON (for scripts)")

    p = add(sub, "serve", cmd_serve, "serve the production model over HTTP (POST /predict, /predict/batch; GET /health)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: loopback only)")
    p.add_argument("--port", type=port, default=8000, help="default 8000")
    p.add_argument("--name", default="ctr", help="registered model name (default ctr)")
    p.add_argument("--poll-seconds", type=positive_float, default=5.0, help="re-read the production version at least this often")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.add_argument("--workers", type=positive_int, default=2, help="uvicorn worker processes (default 2, one per core of the "
                   "reference machine: 1.6-2.2x the requests/s of 1 at 8 clients, see the serving benchmark)")
    p = add(sub, "ui", cmd_ui, "the MLflow UI over the project's runs and models (loopback; needs full mlflow)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: loopback only)")
    p.add_argument("--port", type=port, default=5000, help="default 5000")
    p = add(sub, "predict", cmd_predict, "score one user/item pair in-process (online features, production model)")
    p.add_argument("--user-id", type=entity_id, required=True)
    p.add_argument("--item-id", type=entity_id, required=True)
    p.add_argument("--name", default="ctr", help="registered model name (default ctr)")
    p.add_argument("--json", action="store_true", help="print the result as JSON (for scripts)")
    p = add(sub, "score", cmd_score, "as-of batch scoring: point-in-time features per row, production model")
    p.add_argument("--input", required=True,
                   help="parquet, .csv, .tsv, .json or .jsonl (by suffix) with user_id, item_id, event_timestamp "
                        "(ISO-8601 in text)")
    p.add_argument("--output", required=True, help="file to write (.parquet, .csv, .tsv, .json or .jsonl, by "
                   "suffix): the input rows + click_probability, model_version")
    p.add_argument("--name", default="ctr", help="registered model name (default ctr)")
    p.add_argument("--json", action="store_true", help="print the result as JSON (for scripts)")


