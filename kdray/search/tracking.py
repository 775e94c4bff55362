"""Experiment tracking through Ray Tune's own logger callbacks (`sweep.loggers`).

    sweep:
      loggers: [csv, tensorboard, mlflow]          # default: [csv, tensorboard]
      logger_options:
        mlflow: {tracking_uri: "sqlite:////data/mlflow.db", experiment_name: sst2}

Each name maps to one Tune callback: `csv` (progress.csv per trial), `tensorboard`
(TensorBoard event files per trial), `mlflow` (Tune's MLflowLoggerCallback: one MLflow run per
trial with its searched config as params and every report as metrics, the selector's and the
teacher policy's diagnostics included) and `wandb` (Tune's WandbLoggerCallback: one W&B run per
trial, its full config and every report). At a trial's end its run folder (phase log, probes,
predictions, results.json, the student; not the training checkpoints) goes to its MLflow run
under `run/` and to its W&B run as an artifact (kdray.search.tracking_callbacks).
Tune's JSON results are always written (kdray's analysis reads them). After the sweep the
analysis report (`<experiment>/analysis/`) goes to MLflow and W&B as one more run, `analysis`.

MLflow and W&B are optional extras (`pip install "kdray[mlflow]"`, `"kdray[wandb]"`); asking
for one that is not installed is refused before any work, naming the extra. Defaults: MLflow
writes to $MLFLOW_TRACKING_URI, else to a SQLite store in the sweep's folder,
`<experiment>/mlflow.db`, with artifacts in `<experiment>/mlartifacts` (browse it with
`pip install mlflow; mlflow ui --backend-store-uri sqlite:///<experiment>/mlflow.db`); the
MLflow experiment and the W&B project are the sweep's name. W&B needs a login (`wandb login`,
WANDB_API_KEY) or offline mode (WANDB_MODE=offline, or `logger_options: {wandb: {mode: offline}}`).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdray.base.errors import ConfigError, unknown
from kdray.base.io import is_uri
from kdray.search.spec import SweepSpec

log = logging.getLogger(__name__)

#: Where the analysis report is (kdray.analysis.report.end_of_sweep writes it).
ANALYSIS_DIR = "analysis"


def _wandb_offline(spec: SweepSpec) -> bool:
    mode = spec.sweep.logger_options.get("wandb", {}).get("mode") or os.environ.get("WANDB_MODE")
    return mode in ("offline", "disabled")


def check_login(spec: SweepSpec) -> None:
    """W&B online without credentials would fail inside Tune after the teacher fine-tune;
    refused before any work instead."""
    if "wandb" not in spec.sweep.loggers or _wandb_offline(spec):
        return
    opts = spec.sweep.logger_options.get("wandb", {})
    if os.environ.get("WANDB_API_KEY") or opts.get("api_key_file"):
        return
    import wandb

    try:
        logged_in = bool(wandb.api.api_key)
    except Exception:  # an unreadable settings file counts as no login
        logged_in = False
    if not logged_in:
        raise ConfigError(
            "'sweep.loggers: wandb' needs a W&B login: run `wandb login`, set WANDB_API_KEY, "
            "or log offline (WANDB_MODE=offline, or sweep.logger_options.wandb.mode: offline)"
        )


def driver_env(spec: SweepSpec) -> dict[str, str]:
    """Environment for the driver while Tune runs: Tune adds no loggers of its own beyond
    `sweep.loggers`, and W&B's offline mode is what Tune's W&B callback reads."""
    env = {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}
    if "wandb" in spec.sweep.loggers and _wandb_offline(spec):
        env["WANDB_MODE"] = os.environ.get("WANDB_MODE") or "offline"
    return env


def _local(experiment: str) -> Path | None:
    return None if is_uri(experiment) else Path(experiment)


def mlflow_uri(spec: SweepSpec, experiment: str) -> str | None:
    """The MLflow tracking URI: the option, $MLFLOW_TRACKING_URI, or a SQLite store in the
    sweep's folder (`<experiment>/mlflow.db`; MLflow 3 keeps its plain-file store for legacy
    use only)."""
    uri = spec.sweep.logger_options.get("mlflow", {}).get("tracking_uri")
    local = _local(experiment)
    if uri or os.environ.get("MLFLOW_TRACKING_URI") or local is None:
        return uri or os.environ.get("MLFLOW_TRACKING_URI")
    return f"sqlite:///{local.resolve() / 'mlflow.db'}"


def mlflow_experiment(spec: SweepSpec) -> str:
    """The MLflow experiment of the sweep: `logger_options.mlflow.experiment_name`, else the
    sweep's name."""
    return spec.sweep.logger_options.get("mlflow", {}).get("experiment_name") or spec.name


def prepare(spec: SweepSpec, experiment: str) -> None:
    """Before Ray starts: W&B's login, and the MLflow experiment created (artifacts beside
    the store, `<experiment>/mlartifacts`, when the store is the default one): a tracking
    URI MLflow refuses is refused here, not after the teacher fine-tune."""
    check_login(spec)
    if "mlflow" not in spec.sweep.loggers:
        return
    from mlflow.tracking import MlflowClient

    uri = mlflow_uri(spec, experiment)
    local = _local(experiment)
    try:
        client = MlflowClient(tracking_uri=uri)
        if client.get_experiment_by_name(mlflow_experiment(spec)) is None:
            server = str(uri or "").startswith(("http:", "https:", "databricks"))
            artifacts = None
            if not server and local is not None:
                artifacts = (local.resolve() / "mlartifacts").as_uri()
            client.create_experiment(mlflow_experiment(spec), artifact_location=artifacts)
    except Exception as exc:  # MLflow raises its own exception types
        raise ConfigError(
            f"MLflow refused the tracking store {uri or '(its default)'}: {exc}; set "
            f"sweep.logger_options.mlflow.tracking_uri (e.g. sqlite:///PATH/mlflow.db) or "
            f"$MLFLOW_TRACKING_URI"
        ) from exc


def _csv(spec: SweepSpec, experiment: str, o: dict[str, Any]) -> Any:
    from ray.tune.logger import CSVLoggerCallback

    return CSVLoggerCallback()


def _tensorboard(spec: SweepSpec, experiment: str, o: dict[str, Any]) -> Any:
    from ray.tune.logger import TBXLoggerCallback

    return TBXLoggerCallback()


def _mlflow(spec: SweepSpec, experiment: str, o: dict[str, Any]) -> Any:
    from kdray.search.tracking_callbacks import MLflowRunFolderCallback

    return MLflowRunFolderCallback(
        tracking_uri=mlflow_uri(spec, experiment),
        experiment_name=mlflow_experiment(spec),
        tags={"kdray.sweep": spec.name, **o.get("tags", {})},
        save_artifact=o.get("save_artifact", False),
    )


def _wandb(spec: SweepSpec, experiment: str, o: dict[str, Any]) -> Any:
    from kdray.search.tracking_callbacks import WandbRunFolderCallback

    local = _local(experiment)
    if local is not None:
        local.mkdir(parents=True, exist_ok=True)
        o.setdefault("dir", str(local))
    o.setdefault("project", spec.name)
    o.setdefault("log_config", True)
    return WandbRunFolderCallback(**o)


@dataclass(frozen=True)
class Logger:
    """One `sweep.loggers` name: the module it needs, what to install when that is missing,
    the options it takes in `sweep.logger_options.<name>`, and its Tune callback's factory
    (sweep, experiment folder, options)."""

    module: str
    extra: str
    options: tuple[str, ...]
    callback: Callable[[SweepSpec, str, dict[str, Any]], Any]


#: `sweep.loggers` name -> its logger.
LOGGERS: dict[str, Logger] = {
    "csv": Logger("ray", "ray[tune]", (), _csv),
    "tensorboard": Logger("tensorboardX", "tensorboardX", (), _tensorboard),
    "mlflow": Logger("mlflow", '"kdray[mlflow]"',
                     ("tracking_uri", "experiment_name", "tags", "save_artifact"), _mlflow),
    "wandb": Logger("wandb", '"kdray[wandb]"', ("project", "group", "entity", "mode", "dir",
                                                "api_key_file", "log_config"), _wandb),
}  # fmt: skip


def check_loggers(loggers: Sequence[str], options: Mapping[str, Mapping[str, Any]]) -> None:
    """Every asked-for logger known and installed, every option known: refused before any
    work."""
    for i, name in enumerate(loggers):
        if name not in LOGGERS:
            raise unknown("logger", name, LOGGERS, f"sweep.loggers[{i}]")
        module, extra = LOGGERS[name].module, LOGGERS[name].extra
        if importlib.util.find_spec(module) is None:
            raise ConfigError(
                f"'sweep.loggers: {name}' needs the {module} package, which is not installed; "
                f"pip install {extra}, or drop {name} from sweep.loggers"
            )
    for name, opts in options.items():
        if name not in loggers:
            raise ConfigError(
                f"'sweep.logger_options.{name}' is set but '{name}' is not in sweep.loggers "
                f"({', '.join(loggers) or 'empty'}); add it there or drop its options"
            )
        unknown_options = sorted(set(opts) - set(LOGGERS[name].options))
        if unknown_options:
            valid = ", ".join(LOGGERS[name].options) or "none"
            raise ConfigError(
                f"unknown option 'sweep.logger_options.{name}.{unknown_options[0]}'; valid: {valid}"
            )


def callbacks(spec: SweepSpec, experiment: str) -> list[Any]:
    """Tune callbacks for `sweep.loggers` (the JSON logger always): `experiment` is the
    sweep's folder STORAGE/NAME."""
    from ray.tune.logger import JsonLoggerCallback

    opts = spec.sweep.logger_options
    return [JsonLoggerCallback()] + [
        LOGGERS[name].callback(spec, experiment, dict(opts.get(name, {})))
        for name in spec.sweep.loggers
    ]


def log_analysis(spec: SweepSpec, experiment: str) -> None:
    """The analysis report to MLflow and W&B, as one run named `analysis` beside the trials'.
    A tracker that fails here is logged, never a failure of the finished sweep."""
    local = _local(experiment)
    report = local / ANALYSIS_DIR if local else None
    if report is None or not report.is_dir():
        return
    for name in spec.sweep.loggers:
        try:
            if name == "mlflow":
                _mlflow_analysis(spec, experiment, report)
            elif name == "wandb":
                _wandb_analysis(spec, report)
        except Exception as exc:
            log.warning("could not log the analysis report to %s: %s", name, exc)


def _mlflow_analysis(spec: SweepSpec, experiment: str, report: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri(spec, experiment))
    name = mlflow_experiment(spec)
    found = client.get_experiment_by_name(name)
    exp_id = found.experiment_id if found else client.create_experiment(name)
    run = client.create_run(exp_id, run_name=ANALYSIS_DIR,
                            tags={"kdray.sweep": spec.name, "kdray.kind": "analysis"})  # fmt: skip
    client.log_artifacts(run.info.run_id, str(report), ANALYSIS_DIR)
    client.set_terminated(run.info.run_id)


def _wandb_analysis(spec: SweepSpec, report: Path) -> None:
    import wandb

    o = spec.sweep.logger_options.get("wandb", {})
    run = wandb.init(
        project=o.get("project") or spec.name, group=o.get("group"), entity=o.get("entity"),
        name=ANALYSIS_DIR, job_type=ANALYSIS_DIR, dir=o.get("dir") or str(report.parent),
        mode=o.get("mode"), reinit="create_new",
    )  # fmt: skip
    artifact = wandb.Artifact(f"{spec.name}-{ANALYSIS_DIR}", type="report")
    artifact.add_dir(str(report))
    run.log_artifact(artifact)
    run.finish()
