"""Counterfactual knowledge probes: which knowledge helps at this point of training, measured.

At a probed phase (`probe.every` / `probe.at`, final segment only), right after the selector
has chosen the phase's action and before the phase trains, the run is forked:

    fork = copies of the student and projections, the optimiser state and LR schedule, the RNG
    for each arm:
        control   hard labels alone
        <type>    hard labels + that knowledge type (each non-hard type of the run)
        current   the run's own weights for this phase (left out where they equal an arm's)
      the fork trains K steps on the batches the run itself trains next (same batches, same
      dropout masks), and its reward-split loss is measured
    the fork is thrown away; the run continues from the untouched original

An arm's `loss_drop` is the reward-split loss before the fork minus after its K steps; its
`effect` is loss_drop minus the control's (> 0: the knowledge helped beyond hard labels, on
the same data and noise). The weights of an arm are the static knowledge weights
(knowledge.weights) with action 1 for its types, independent of the selector and stage plan.

Rows go to PROBES (probes.parquet, beside the phase log; columns below), are checkpointed with
the run (a run killed mid-probe probes again from the same state on resume), and the latest
effects are reported with each evaluation (probe/<arm>).

    run_id, stage, episode, phase, step, progress (t/T at the probe), arm, steps (K),
    loss_before, loss_after, loss_drop, effect, val_change, val_effect (NaN unless
    probe.validation), seconds (the arm's wall time), w_<type> (the arm's weights)

Cost: (number of arms) × K student steps and one reward-split evaluation per arm and probe.
Probing every 4th phase with K = phase_length adds (number of arms) × 25% steps; results.json's
`probes` records the measured steps and seconds against the run's own.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from kdray.base.io import atomic_path
from kdray.base.results import PROBE_CONTROL as CONTROL
from kdray.base.results import PROBE_CURRENT as CURRENT
from kdray.base.results import PROBES, WEIGHT_PREFIX
from kdray.training.loop import evaluate, make_optimizer, optimizer_step
from kdray.training.state import RunState


class Prober:
    """The probes of one run: when they are due, the forks, and their rows."""

    def __init__(self, run: RunState) -> None:
        self.cfg = run.cfg.probe
        self.rows: list[dict[str, Any]] = []
        self.seconds = 0.0
        self.steps = 0
        self._fork: tuple[PreTrainedModel, torch.nn.ModuleDict] | None = None

    @property
    def enabled(self) -> bool:
        return self.cfg.enabled

    def due(self, run: RunState) -> bool:
        """Whether the phase about to start (final segment) is probed."""
        if not self.enabled or not run.stage.final:
            return False
        if self.cfg.every and run.phase % self.cfg.every == 0:
            return True
        seg = run.stage.segment_steps  # a phase also ends where its stage does
        start = run.step / seg
        end = min(run.step + run.cfg.selector.phase_length, run.stage.end) / seg
        return any(start <= p < end for p in self.cfg.at)

    def arms(self, run: RunState) -> dict[str, dict[str, float]]:
        """Arm name -> weight per knowledge type (see the module docstring)."""
        static, types = run.static, run.s.types
        only = {k: 0.0 for k in types}
        arms = {CONTROL: {**only, "hard": static["hard"]}}
        for k in types:
            if k != "hard" and static[k] > 0:  # a type at weight 0 would be the control again
                arms[k] = {**only, "hard": static["hard"], k: static[k]}
        current = run.weights()
        if all(current != w for w in arms.values()):
            arms[CURRENT] = current
        return arms

    # -------------------------------------------------------------------------------- probe

    def probe(self, run: RunState) -> None:
        """Fork the run, train and measure every arm, record the rows; the run is unchanged."""
        t0 = time.perf_counter()
        s = run.s
        k = min(self.cfg.steps or run.cfg.selector.phase_length, run.stage.end - run.step)
        if k < 1:
            return
        rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        policy = run.policy.state_dict()
        before = run.reward_loss if run.reward_loss is not None else run.measure_reward_loss()
        val_before = self._validation(run, s.student) if self.cfg.validation else math.nan
        rows: list[dict[str, Any]] = []
        for arm, weights in self.arms(run).items():
            t_arm = time.perf_counter()
            torch.set_rng_state(rng)  # every arm sees the same dropout masks
            if cuda_rng:
                torch.cuda.set_rng_state_all(cuda_rng)
            student = self._train(run, weights, k)
            after = run.measure_reward_loss(student)
            val = self._validation(run, student) if self.cfg.validation else math.nan
            run.policy.load_state_dict(policy)
            rows.append({
                "run_id": run.log.run_id,
                "stage": run.stage.index,
                "episode": run.stage.segment,
                "phase": run.phase,
                "step": run.step,
                "progress": run.progress_frac(),
                "arm": arm,
                "steps": k,
                "loss_before": before,
                "loss_after": after,
                "loss_drop": before - after,
                "val_change": val - val_before,
                "seconds": time.perf_counter() - t_arm,
                **{f"{WEIGHT_PREFIX}{t}": w for t, w in weights.items()},
            })  # fmt: skip
            self.steps += k
        torch.set_rng_state(rng)
        if cuda_rng:
            torch.cuda.set_rng_state_all(cuda_rng)
        for model in self._fork or ():
            model.zero_grad(set_to_none=True)  # the fork's gradients: not kept between probes
        control = rows[0]
        for r in rows:
            r["effect"] = r["loss_drop"] - control["loss_drop"]
            r["val_effect"] = r["val_change"] - control["val_change"]
        self.rows.extend(rows)
        self.seconds += time.perf_counter() - t0

    def _train(self, run: RunState, weights: dict[str, float], k: int) -> PreTrainedModel:
        """A fresh fork of the run's student, projections, optimiser and schedule, trained
        k steps under `weights` on the run's next k batches; returns the fork's student."""
        s, tr = run.s, run.cfg.trainer
        if self._fork is None:  # built once, loaded from the run at every fork
            self._fork = copy.deepcopy(s.student), copy.deepcopy(s.knowledge)
        student, knowledge = self._fork
        student.load_state_dict(s.student.state_dict())
        knowledge.load_state_dict(s.knowledge.state_dict())
        student.train(s.student.training)
        params = [*student.parameters(), *knowledge.parameters()]
        optimizer, lr_schedule = make_optimizer(params, tr, run.stage.lr_steps)
        lr_schedule.load_state_dict(run.lr_schedule.state_dict())
        optimizer.load_state_dict(copy.deepcopy(run.optimizer.state_dict()))  # its own tensors
        fork = dataclasses.replace(s, student=student, knowledge=knowledge)
        for i in range(k):
            step = run.step + i
            losses = fork.losses(run.batch(step), weights, run.policy, step)
            if not math.isfinite(optimizer_step(losses, weights, optimizer, lr_schedule,
                                                tr.max_grad_norm)):  # fmt: skip
                break  # a diverged arm: measured where it stopped
        return student

    def _validation(self, run: RunState, student: PreTrainedModel) -> float:
        s, tr = run.s, run.cfg.trainer
        metrics = evaluate(student, s.data.validation, s.spec, s.device, tr.eval_batch_size,
                           tr.bf16)  # fmt: skip
        return metrics[s.spec.main_metric]

    # ------------------------------------------------------------------------ records

    def report_fields(self) -> dict[str, float]:
        """The latest probe's effect per arm (probe/<arm>) and the probe steps so far (no
        times: reports of a run stay the same from one attempt to the next)."""
        if not self.rows:
            return {}
        last = self.rows[-1]["step"], self.rows[-1]["episode"]
        out = {f"probe/{r['arm']}": r["effect"] for r in self.rows
               if (r["step"], r["episode"]) == last and r["arm"] != CONTROL}  # fmt: skip
        return {**out, "probe/steps": float(self.steps)}  # seconds: in results.json only

    def summary(self, run_steps: int, wall_s: float) -> dict[str, Any] | None:
        """results.json's `probes`: what the probes cost against the run's own steps and time."""
        if not self.enabled:
            return None
        probes = len({(r["episode"], r["step"]) for r in self.rows})
        own = max(1e-9, wall_s - self.seconds)
        return {"probes": probes, "rows": len(self.rows), "steps": self.steps,
                "seconds": self.seconds, "step_overhead": self.steps / max(1, run_steps),
                "time_overhead": self.seconds / own}  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "seconds": self.seconds, "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = list(state["rows"])
        self.seconds, self.steps = state["seconds"], state["steps"]

    def write(self, out_dir: Path) -> None:
        """All rows so far as Parquet, atomically (nothing for a run without probes)."""
        if not self.enabled:
            return
        import pandas as pd

        with atomic_path(out_dir / PROBES) as tmp:
            pd.DataFrame(self.rows).to_parquet(tmp, index=False)
