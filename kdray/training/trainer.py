"""One distillation run from one `TrialConfig`. No Ray import: results leave through a Reporter.

    setup (kdray.training.build): data -> teachers (resolved by the caller) -> student -> knowledge
    for each stage of the plan (kdray.training.stages; a stage that resets the student starts a new
    segment, e.g. an ACKS stage-A episode):
        for each phase of K steps (a stage's end also ends its phase):
            a = selector.start_phase(state)              # action per knowledge type
            K x: w = teacher_policy.weights(batch)       # (B, n_teachers); kdray.teacher_policy
                 L = Σ_k a_k·w_k·Σ_j Σ_t w_jt·L_k(j, t) / mass   (types with a_k·w_k = 0 or
                 outside the stage not computed); AdamW step
            selector.end_phase(outcome)                  # reward-split loss drop, if asked
            teacher_policy.end_phase(outcome)            # rl: one REINFORCE update
            one row of the phase log (kdray.training.phaselog)
            every eval_every steps (last segment): validation -> checkpoint -> reporter.report
    final: test (GLUE dev) metrics, student saved (a valid teacher.path), results.json

A non-finite loss ends the run with status "diverged" (a result, not an exception). The checkpoint
(kdray.training.checkpoint) holds student, projections, optimiser, LR schedule, selector, RNG, stage
and data position, so a run restarted on the same output_dir continues where it stopped.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel

import kdray.training.checkpoint as checkpoint
from kdray.base.results import (
    CHECKPOINT,
    RESULTS,
    ListReporter,
    Reporter,
    RunResult,
    write_run_config,
)
from kdray.base.tensors import default_float
from kdray.config import TrialConfig
from kdray.models.classifier import encode
from kdray.models.device import autocast
from kdray.models.features import Needs
from kdray.selector import PhaseOutcome, PhaseState, build_selector, measures_reward
from kdray.teacher_policy import build_policy, measures_reward_split
from kdray.teachers.outputs import TeacherOutputs
from kdray.training.build import Setup, setup
from kdray.training.checks import check_trial
from kdray.training.finish import finish_run
from kdray.training.loop import BatchOrder, evaluate, make_optimizer, optimizer_step
from kdray.training.phaselog import PhaseLog
from kdray.training.policy_wiring import policy_context, rescorer
from kdray.training.probes import Prober
from kdray.training.stages import plan
from kdray.training.teacher_gate import check_teachers

__all__ = ["CHECKPOINT", "RESULTS", "ListReporter", "Reporter", "Run", "RunResult", "Setup",
           "distil", "setup"]  # fmt: skip

log = logging.getLogger(__name__)


class Run:
    """The training loop of one trial, resumable from its checkpoint."""

    def __init__(
        self,
        s: Setup,
        reporter: Reporter | None,
        progress: bool,
        run_id: str | None = None,
        allow_mutation: bool = False,
        teacher_gap: dict[str, Any] | None = None,
        label: str | None = None,
    ) -> None:
        self.s, self.cfg = s, s.cfg
        self.reporter = reporter or ListReporter()
        self.progress = progress
        self.label = label  # the progress bar's description (default: distil / the stage)
        self.allow_mutation = allow_mutation  # resume under other MUTABLE_PATHS values (PBT)
        #: The teacher-quality gate's finding (kdray.training.teacher_gate), for results.json.
        self.teacher_gap = teacher_gap
        tr, sel = s.cfg.trainer, s.cfg.selector
        self.out_dir = Path(tr.output_dir or tempfile.mkdtemp(prefix="kdray-run-")).resolve()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_run_config(self.out_dir, s.cfg.to_dict())
        self.run_id = run_id or self.out_dir.name
        self.static = {k: s.cfg.knowledge.weights.get(k, 1.0) for k in s.types}
        self.stages = plan(s.cfg, s.types)
        self.selector = build_selector(
            sel if sel.seed is not None else replace(sel, seed=tr.seed), s.types
        )
        self.measures_reward = measures_reward(sel) or measures_reward_split(s.cfg)
        self.policy = build_policy(s.cfg, policy_context(s))
        self.rescore = rescorer(s)  # what the rl policy's rewards read, at a phase's end
        n_reward = len(s.data.reward)
        if sel.reward_examples is not None:
            n_reward = min(n_reward, sel.reward_examples)
        self.reward_split = s.data.reward.subset(torch.arange(n_reward))
        self.initial = {  # the fresh student every segment (stage-A episode) starts from
            "student": {k: v.detach().clone() for k, v in s.student.state_dict().items()},
            "knowledge": {k: v.detach().clone() for k, v in s.knowledge.state_dict().items()},
        }
        self.log = PhaseLog(self.run_id, sel.kind, s.types)
        self.prober = Prober(self)
        self.enter_stage(0)
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, float] = {}
        self.wall_before = 0.0
        self.resumed_from = 0
        self.t0 = time.perf_counter()

    # ------------------------------------------------------------------------------ stages

    @property
    def final_episode(self) -> bool:
        """In the last segment: the student that is validated, reported and kept."""
        return self.stage.final

    def enter_stage(self, i: int, restoring: bool = False) -> None:
        """Start stage i: a new segment reloads the initial student and starts the data order
        and the counters again; a fresh optimiser and LR schedule where the stage resets them
        (always when restoring: the checkpoint then fills in their state)."""
        s, tr = self.s, self.cfg.trainer
        st = self.stage = self.stages[i]
        if i == 0 or st.reset_student or restoring:
            if i == 0 or st.reset_student:
                s.student.load_state_dict(self.initial["student"])
                s.knowledge.load_state_dict(self.initial["knowledge"])
            seed = tr.seed if st.final else tr.seed + 1000 * (st.segment + 1)
            lengths = s.data.train.lengths if tr.group_by_length else None
            self.order = BatchOrder(len(s.data.train), tr.batch_size, seed, lengths)
            self.step = 0
            self.phase = 0
            self.last_losses: dict[str, float] = {}
            self.reward_loss: float | None = None
            self.phase_val = math.nan
        if st.reset_optimizer or restoring:
            params = [*s.student.parameters(), *s.knowledge.parameters()]
            self.optimizer, self.lr_schedule = make_optimizer(params, tr, st.lr_steps)
        self.action: dict[str, float] = {}
        self.phase_sums: dict[str, float] = {}
        self.phase_steps = 0
        if not st.learn:
            self.selector.freeze()
            self.policy.freeze()

    # ------------------------------------------------------------------------- checkpointing

    def save(self) -> None:
        checkpoint.save_run(self)
        self.log.write(self.out_dir)
        self.prober.write(self.out_dir)

    def restore(self) -> bool:
        return checkpoint.restore_run(self)

    # ------------------------------------------------------------------------------ one step

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        idx = self.order(step)
        return {k: v.to(self.s.device) for k, v in self.s.data.train.batch(idx).items()}

    def losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The losses of the knowledge types active in this phase (weight > 0, in the
        stage), each reduced with the teacher policy's per-example teacher weights."""
        return self.s.losses(batch, self.weights(), self.policy, self.step)

    def train_step(self) -> float:
        """One optimiser step on this step's batch; the weighted loss (0 if nothing active)."""
        weights = self.weights()  # once per step: losses() would work it out again
        losses = self.s.losses(self.batch(self.step), weights, self.policy, self.step)
        value = optimizer_step(losses, weights, self.optimizer, self.lr_schedule,
                               self.cfg.trainer.max_grad_norm)  # fmt: skip
        if not math.isfinite(value):
            return value
        for k, v in losses.items():
            self.phase_sums[k] = self.phase_sums.get(k, 0.0) + float(v.detach())
        self.phase_steps += 1
        return value

    # ------------------------------------------------------------------------------ phases

    def progress_frac(self) -> float:
        return self.step / self.stage.segment_steps

    def measure_reward_loss(self, model: PreTrainedModel | None = None) -> float:
        """The reward-split loss of the student (or of `model`, a probe's fork of it)."""
        s, tr = self.s, self.cfg.trainer
        return evaluate(
            model or s.student, self.reward_split, s.spec, s.device, tr.eval_batch_size, tr.bf16
        )["loss"]

    @torch.no_grad()
    def mean_cls(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean last-layer [CLS] of the student and the first teacher over this phase's first
        batch."""
        s = self.s
        batch = self.batch(self.step)
        last = s.student_shape.layers
        was_training = s.student.training
        s.student.eval()
        with autocast(s.device, self.cfg.trainer.bf16):
            hs = encode(s.student, batch, Needs(hidden=frozenset({last})))
        s.student.train(was_training)
        t0 = s.teachers[0]
        teacher = t0.features(batch, s.teacher_needs(0, ()), s.device, self.cfg.trainer.bf16)
        cls_s = default_float(hs.hidden[last][:, 0]).mean(0)  # (d_S,)
        cls_t = default_float(teacher.hidden[t0.shape.layers][:, 0]).mean(0)  # (d_T,)
        return cls_s.cpu(), cls_t.cpu()

    def start_phase(self) -> None:
        state = PhaseState(
            phase=self.phase,
            step=self.step,
            progress=self.progress_frac(),
            last_losses=dict(self.last_losses),
        )
        if self.selector.needs_cls:
            state.student_cls, state.teacher_cls = self.mean_cls()
        if self.measures_reward and self.reward_loss is None:
            self.reward_loss = self.measure_reward_loss()
        self.action = self.selector.start_phase(state)
        self.phase_sums, self.phase_steps = {}, 0
        if self.prober.due(self):  # forks of the run, before the policy's phase records start
            self.prober.probe(self)
        self.policy.start_phase()

    def end_phase(self) -> None:
        losses = {k: v / max(1, self.phase_steps) for k, v in self.phase_sums.items()}
        before = after = None
        if self.measures_reward:
            before, after = self.reward_loss, self.measure_reward_loss()
            self.reward_loss = after
        seg = self.stage.segment_steps
        outcome = PhaseOutcome(
            phase=self.phase,
            step=self.step,
            progress=self.progress_frac(),
            action=dict(self.action),
            losses=losses,
            reward_loss_before=before,
            reward_loss_after=after,
            last=self.step >= seg or self.learning_ends(),
            phases=self.stage.segment_phases,
        )
        self.selector.end_phase(outcome)
        self.policy.end_phase(outcome, self.rescore)
        self.log.add(
            stage=self.stage.index,
            episode=self.stage.segment,
            final=self.final_episode,
            phase=self.phase,
            step=self.step,
            progress=self.progress_frac(),
            progress_start=(self.step - self.phase_steps) / seg,
            weights=self.weights(),
            losses=losses,
            reward_before=before,
            reward_after=after,
            val_metric=self.phase_val,
            extra={**self.selector.log_fields(), **self.policy.log_fields()},
        )
        self.last_losses = losses
        self.phase += 1
        self.action = {}
        self.phase_val = math.nan

    def learning_ends(self) -> bool:
        """The phase ends a learning stage that a frozen one follows: the agent's last
        transition (no bootstrap from a state it will never act in while learning)."""
        st = self.stage
        nxt = self.stages[st.index + 1] if st.index + 1 < len(self.stages) else None
        return self.step == st.end and st.learn and nxt is not None and not nxt.learn

    # -------------------------------------------------------------------------------- eval

    def validate(self, train_loss: float) -> dict[str, Any]:
        s, tr = self.s, self.cfg.trainer
        metrics = evaluate(
            s.student, s.data.validation, s.spec, s.device, tr.eval_batch_size, tr.bf16
        )
        main = s.spec.main_metric
        if not self.log.set_val(self.stage.segment, self.step, metrics[main]):
            self.phase_val = metrics[main]  # goes to the row of the phase under way
        since = self.history[-1]["step"] if self.history else -1
        row: dict[str, Any] = {
            "step": self.step,
            "progress": self.progress_frac(),
            "train_loss": train_loss,
            **{f"val_{k}": v for k, v in metrics.items()},
            "val_metric": metrics[main],
            "lr": self.lr_schedule.get_last_lr()[0],
            **self.log.weight_summary(since, self.weights() if self.action else None),
            **{f"selector/{k}": v for k, v in self.selector.diagnostics().items()},
            **self.policy.diagnostics(),
            **self.prober.report_fields(),
        }
        if not self.best or metrics[main] > self.best["val_metric"]:
            self.best = {"val_metric": metrics[main], "step": float(self.step)}
        row["best_val_metric"] = self.best["val_metric"]
        self.history.append(row)
        return row

    def weights(self) -> dict[str, float]:
        """The phase's effective weight per knowledge type: action × static weight × the
        type's schedule at the phase's start (0 for types outside the stage)."""
        allowed, schedules = self.stage.types, self.cfg.knowledge.schedules
        start = (self.step - self.phase_steps) / self.stage.segment_steps
        return {
            k: self.action.get(k, 0.0) * self.static[k]
            * (schedules[k].value(start) if k in schedules else 1.0)
            if k in allowed else 0.0
            for k in self.s.types
        }  # fmt: skip

    # -------------------------------------------------------------------------------- run

    def advance(self) -> float:
        """One student step, with its phase started before it or ended after it when due
        (every phase_length steps, and at the stage's end). Returns the step's weighted loss
        (non-finite: nothing was updated)."""
        if not self.action:
            self.start_phase()
        loss = self.train_step()
        if not math.isfinite(loss):
            return loss
        self.step += 1
        if self.phase_steps == self.cfg.selector.phase_length or self.step == self.stage.end:
            self.end_phase()
        return loss

    def steps_done(self) -> int:
        """Student steps of every stage so far."""
        before = sum(st.steps for st in self.stages[: self.stage.index])
        return before + self.step - self.stage.start

    def run(self) -> RunResult:
        self.t0 = time.perf_counter()
        tr = self.cfg.trainer
        self.restore()
        self.s.student.train()
        status = "finished"
        total = sum(st.steps for st in self.stages)
        done = self.steps_done()
        self.resumed_from = done  # steps done before this attempt (a restart continues there)
        bar = tqdm(total=total, initial=done, disable=not self.progress, dynamic_ncols=True)
        running: list[float] = []
        with bar:
            while True:
                st = self.stage
                bar.set_description(self.label or (
                    st.name if len(self.stages) > 1 else "distil"
                    if self.s.teachers else "fine-tune"
                ))  # fmt: skip
                while self.step < st.end:
                    loss = self.advance()
                    if not math.isfinite(loss):
                        status = "diverged"
                        log.warning("non-finite loss at step %d: run diverged", self.step)
                        break
                    running.append(loss)
                    bar.update(1)
                    seg = st.segment_steps
                    if st.final and (self.step % tr.eval_every == 0 or self.step == seg):
                        row = self.validate(float(np.mean(running)) if running else math.nan)
                        running = []
                        bar.set_postfix(val=f"{row['val_metric']:.4f}",
                                        loss=f"{row['train_loss']:.3f}")  # fmt: skip
                        self.save()
                        if self.step < seg:
                            self.reporter.report({**row, "done": False,
                                                  "resumed_from_step": self.resumed_from},
                                                 checkpoint_dir=str(self.out_dir))  # fmt: skip
                if status != "finished" or st.index == len(self.stages) - 1:
                    break
                if self.stages[st.index + 1].segment != st.segment:
                    self.selector.end_episode()
                self.enter_stage(st.index + 1)
                self.save()
        return finish_run(self, status)


def distil(
    cfg: TrialConfig,
    reporter: Reporter | None = None,
    progress: bool = False,
    teacher_outputs: Mapping[str, TeacherOutputs] | TeacherOutputs | None = None,
    run_id: str | None = None,
    allow_mutation: bool = False,
    teacher_paths: Mapping[str, str] | str | None = None,
    label: str | None = None,
) -> RunResult:
    """Run (or resume, when output_dir holds a checkpoint) one distillation trial.

    `teacher_paths`: the fine-tuned folder of each teacher without `path` in the config
    (`kdray.training.fine_tune.resolve_teachers` gives them); `teacher_outputs`: outputs shared by a
    sweep. `run_id` names the run in its phase log (default: the output folder's name);
    `allow_mutation` lets the checkpoint come from a run with other MUTABLE_PATHS values;
    `label`: the progress bar's description.
    """
    cfg = check_trial(cfg)
    checkpoint.check_output_dir(cfg, allow_mutation)
    gap = check_teachers(cfg, teacher_paths, distil, progress)  # before any distillation
    s = setup(cfg, teacher_paths, progress=progress, teacher_outputs=teacher_outputs)
    return Run(s, reporter, progress, run_id=run_id, allow_mutation=allow_mutation,
               teacher_gap=gap, label=label).run()  # fmt: skip
