"""Tune's MLflow and W&B callbacks, plus each trial's run folder as artifacts at its end.

Tune's own callbacks save the driver's copy of a trial's logs (params, progress.csv,
result.json); the trial's `run/` folder (phase log, probes, predictions, results.json, the
student) is in the storage path, so these subclasses add it, without the resumable training
state (checkpoint.pt), which is large and of no use outside kdray. Imported by
`kdray.search.tracking.callbacks` only when a tracker is asked for (it imports Ray).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.air.integrations.wandb import WandbLoggerCallback, _QueueItem

from kdray.base.io import is_uri
from kdray.base.results import CHECKPOINT, PREV_CHECKPOINT, TRIAL_RUN_DIR

#: A trial folder's hard-linked copy of `run/` without the training state: what is logged.
ARTIFACTS_DIR = "run_artifacts"
SKIPPED = (CHECKPOINT, PREV_CHECKPOINT)


def stage_run_folder(trial_path: str) -> Path | None:
    """`<trial>/run_artifacts/`: `run/` less the checkpoints, hard-linked (no copy), or None
    when the trial has no local run folder (storage at a URI: Tune's own sync covers it)."""
    run = Path(trial_path) / TRIAL_RUN_DIR
    if is_uri(trial_path) or not run.is_dir():
        return None
    stage = Path(trial_path) / ARTIFACTS_DIR
    shutil.rmtree(stage, ignore_errors=True)
    for src in run.rglob("*"):
        rel = src.relative_to(run)
        if src.name in SKIPPED or rel.parts[0].startswith("."):
            continue
        dst = stage / rel
        if src.is_dir():
            dst.mkdir(parents=True, exist_ok=True)
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:  # another file system: a copy
            shutil.copy2(src, dst)
    return stage


class MLflowRunFolderCallback(MLflowLoggerCallback):
    """Tune's MLflowLoggerCallback; at a trial's end its run folder goes to the trial's MLflow
    run under `run/`."""

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        run_id = self._trial_runs.get(trial)
        stage = stage_run_folder(trial.path)
        if run_id and stage is not None:
            from mlflow.tracking import MlflowClient

            MlflowClient(tracking_uri=self.tracking_uri).log_artifacts(
                run_id, str(stage), TRIAL_RUN_DIR
            )
        super().log_trial_end(trial, failed)


class WandbRunFolderCallback(WandbLoggerCallback):
    """Tune's WandbLoggerCallback; at a trial's end its run folder goes to the trial's W&B run
    as an artifact (type model: the student is in it)."""

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        stage = stage_run_folder(trial.path)
        if stage is not None and trial in self._trial_queues:
            self._trial_queues[trial].put((_QueueItem.CHECKPOINT, str(stage)))
        super().log_trial_end(trial, failed)
