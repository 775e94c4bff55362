"""One distillation run from one `TrialConfig`. No Ray import: results leave through a Reporter.

    setup: config-level checks (shapes from HF configs) -> data -> teacher -> student ->
           knowledge -> teacher outputs
    for each episode (two-stage ACKS: E learning episodes from the initial student, then the
    final run with the frozen actor; otherwise just the final run):
        for each phase of K steps:
            a = selector.start_phase(state)              # action per knowledge type
            K x: L = Σ_k a_k·w_k·L_k (types with a_k·w_k = 0 not computed); AdamW step
            selector.end_phase(outcome)                  # reward-split loss drop, if asked
            one row of the phase log (phases.parquet)
            every eval_every steps (final episode): validation -> checkpoint -> reporter.report
    final: test (GLUE dev) metrics, student saved, results.json

A non-finite loss ends the run with status "diverged" (a result, not an exception). The
checkpoint holds student, projections, optimiser, schedule, selector, RNG and the data
position, so a run restarted on the same output_dir continues where it stopped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoTokenizer, PretrainedConfig, PreTrainedModel
from transformers import get_linear_schedule_with_warmup as linear_schedule

from kdray.config import TrialConfig, flat_paths, is_mutable
from kdray.data import TaskData, TaskSpec, TokenizedSplit, load_task
from kdray.errors import ConfigError
from kdray.io import atomic_dir, atomic_path, atomic_torch_save, atomic_write_text
from kdray.knowledge import build_knowledge, check_shapes, needs_of
from kdray.knowledge.base import KnowledgeContext
from kdray.metrics import compute_metrics
from kdray.models import (
    Features,
    Needs,
    Shape,
    build_student,
    check_teacher_task,
    encode,
    layer_map,
    load_classifier,
    load_config,
    resolve_backbone,
    student_shape,
)
from kdray.selector import (
    MIN_REWARD_EXAMPLES,
    SELECTORS,
    PhaseOutcome,
    PhaseState,
    build_selector,
    measures_reward,
)
from kdray.teacher_cache import (
    TeacherOutputs,
    cache_key,
    compute_teacher_outputs,
    estimate_bytes,
    load_or_compute,
    model_fingerprint,
)

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
RESULTS = "results.json"
PHASE_LOG = "phases.parquet"


# ---------------------------------------------------------------------------------- reporting


class Reporter(Protocol):
    """Where evaluation results go: Ray's tune.report in a sweep, a list in tests."""

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None = None) -> None: ...


class ListReporter:
    """Keeps every report in memory."""

    def __init__(self) -> None:
        self.results: list[dict[str, Any]] = []

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None = None) -> None:
        self.results.append(dict(metrics))


@dataclass
class RunResult:
    """The outcome of one run, also written to output_dir/results.json."""

    status: str  # "finished" | "diverged"
    steps: int
    validation: dict[str, float]
    test: dict[str, dict[str, float]]
    main_metric: str
    wall_s: float
    output_dir: str
    student_dir: str | None = None
    teacher: str | None = None
    teacher_cache: str = "off"  # "off" | "cached" | "live (over budget)"
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def test_score(self) -> float:
        """The main metric on the (first) test split."""
        first = next(iter(self.test.values()), {})
        return float(first.get(self.main_metric, float("nan")))


# -------------------------------------------------------------------------------------- setup


def cache_root(cfg: TrialConfig) -> Path:
    root = cfg.cache_dir or os.environ.get("KDRAY_CACHE") or "~/.cache/kdray"
    return Path(root).expanduser().resolve()


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("'trainer.device: cuda' but no CUDA device is visible; use auto or cpu")
    return torch.device(name)


@dataclass
class Setup:
    """Everything a run trains with, built once."""

    cfg: TrialConfig
    spec: TaskSpec
    data: TaskData
    device: torch.device
    student: PreTrainedModel
    knowledge: nn.ModuleDict
    student_needs: Needs
    teacher_needs: Needs
    teacher: PreTrainedModel | None
    teacher_outputs: TeacherOutputs | None
    teacher_path: str | None
    cache_mode: str
    student_layers: int
    teacher_layers: int


def check_selector_data(cfg: TrialConfig, data: TaskData) -> None:
    """A run that measures the reward-split loss needs enough examples there."""
    if not measures_reward(cfg.selector):
        return
    have = len(data.reward)
    need = max(MIN_REWARD_EXAMPLES, cfg.selector.reward_examples or 0)
    if have < MIN_REWARD_EXAMPLES:
        raise ConfigError(
            f"selector '{cfg.selector.kind}' measures the reward split, which has {have} "
            f"examples; it needs at least {MIN_REWARD_EXAMPLES} to measure a loss drop. Raise "
            f"data.reward_fraction (now {cfg.data.reward_fraction}) or "
            f"data.max_train_examples so that reward_fraction x train >= {need}"
        )


def setup(
    cfg: TrialConfig,
    progress: bool = False,
    teacher_outputs: TeacherOutputs | None = None,
) -> Setup:
    """Check everything that HF configs and data sizes can tell, then load data and models."""
    from kdray.data import TASKS

    torch.manual_seed(cfg.trainer.seed)  # student init and projections follow trainer.seed
    spec = TASKS[cfg.data.task]
    device = pick_device(cfg.trainer.device)
    pretrained = cfg.student.init == "pretrained"
    needs_teacher = not pretrained
    if pretrained:
        t_path: str | None = None
        source = resolve_backbone(cfg.teacher.backbone)
        t_config: PretrainedConfig = load_config(source)
    elif cfg.teacher.path:
        t_path = source = resolve_backbone(cfg.teacher.path)
        t_config = load_config(t_path)
        check_teacher_task(t_path, t_config, spec)
    else:  # fine-tuned by kdray from the backbone: the backbone's shape, checked first
        t_path, source = None, resolve_backbone(cfg.teacher.backbone)
        t_config = load_config(source)
    t_shape = Shape.of(t_config)
    s_shape = student_shape(cfg.student, t_shape)
    check_shapes(cfg.knowledge, s_shape, t_shape)
    g = layer_map(cfg.student, t_shape.layers)

    tokenizer = AutoTokenizer.from_pretrained(source)
    data = load_task(cfg.data, tokenizer, cache_root(cfg), progress=progress)
    check_selector_data(cfg, data)
    if needs_teacher and t_path is None:
        from kdray.teacher import ensure_teacher

        t_path = ensure_teacher(cfg, progress=progress)

    ctx = KnowledgeContext(
        cfg=cfg.knowledge,
        is_regression=spec.is_regression,
        student_layers=s_shape.layers,
        teacher_layers=t_shape.layers,
        student_width=s_shape.width,
        teacher_width=t_shape.width,
        student_heads=s_shape.heads,
        teacher_heads=t_shape.heads,
        layer_map=g,
    )
    knowledge = build_knowledge(ctx)
    s_needs, t_needs = needs_of(knowledge)
    if SELECTORS[cfg.selector.kind].needs_cls:  # the agent's state reads the last [CLS]
        s_needs = s_needs | Needs(hidden=frozenset({s_shape.layers}))
        t_needs = t_needs | Needs(hidden=frozenset({t_shape.layers}))
    teacher: PreTrainedModel | None = None
    if needs_teacher:
        assert t_path is not None
        teacher = load_classifier(t_path, eager=bool(t_needs.attn_probs))
        teacher.to(device)  # type: ignore[arg-type]
        teacher.eval().requires_grad_(False)
    student = build_student(
        cfg.student,
        t_config,
        spec,
        teacher=teacher,
        backbone=source,
        eager=bool(s_needs.attn_probs),
    )
    student.to(device)  # type: ignore[arg-type]
    knowledge.to(device)

    cache_mode = "off"
    uses_teacher = any(m.needs_teacher for m in knowledge.values()) or (
        SELECTORS[cfg.selector.kind].needs_cls
    )
    if not uses_teacher:
        teacher_outputs = None
    elif teacher_outputs is not None:
        if not teacher_outputs.matches(data.train, data.fingerprint) or not teacher_outputs.covers(
            t_needs
        ):
            raise ConfigError(
                "the shared teacher outputs were computed for other training data or fewer "
                "teacher layers than this trial needs; compute them on this trial's train split "
                "(same task, max_length, split settings) for the union of the trials' knowledge"
            )
        cache_mode = "cached (shared)"
    elif cfg.trainer.teacher_cache:
        budget = cfg.trainer.teacher_cache_max_mb * 2**20
        size = estimate_bytes(data.train, t_needs, t_shape.width, t_shape.heads)
        if size <= budget:
            assert teacher is not None and t_path is not None
            live_teacher = teacher
            key = cache_key(model_fingerprint(t_path), data.fingerprint, "train", t_needs)
            teacher_outputs = load_or_compute(
                cache_root(cfg),
                key,
                data.train,
                data.fingerprint,
                lambda: compute_teacher_outputs(
                    live_teacher,
                    data.train,
                    t_needs,
                    batch_size=cfg.trainer.eval_batch_size,
                    device=device,
                    progress=progress,
                    autocast=device.type == "cuda" and cfg.trainer.bf16,
                    fingerprint=data.fingerprint,
                ),
            )
            cache_mode = "cached"
        else:
            log.warning(
                "teacher outputs would take %.0f MB > trainer.teacher_cache_max_mb=%d; "
                "running the teacher live",
                size / 2**20,
                cfg.trainer.teacher_cache_max_mb,
            )
            cache_mode = "live (over budget)"
    if teacher_outputs is not None or not uses_teacher:
        teacher = None  # remap is done and every output is cached: free the teacher's memory
    return Setup(
        cfg,
        spec,
        data,
        device,
        student,
        knowledge,
        s_needs,
        t_needs,
        teacher,
        teacher_outputs,
        t_path,
        cache_mode,
        s_shape.layers,
        t_shape.layers,
    )


# ----------------------------------------------------------------------------------- training


class BatchOrder:
    """Seeded reshuffle every epoch; the batch of any step is known without replaying."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size, self.seed = n, min(batch_size, n), seed
        self.per_epoch = max(1, n // self.batch_size)
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def __call__(self, step: int) -> torch.Tensor:
        epoch, b = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=gen)
        return self._perm[b * self.batch_size : (b + 1) * self.batch_size]


def _autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager[Any]:
    if device.type == "cuda" and bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.inference_mode()
def evaluate(
    model: PreTrainedModel,
    split: TokenizedSplit,
    spec: TaskSpec,
    device: torch.device,
    batch_size: int,
    bf16: bool = False,
) -> dict[str, float]:
    """Metrics and mean hard loss of `model` on `split` (longest-first batches, eval mode)."""
    was_training = model.training
    model.eval()
    order = torch.argsort(split.lengths, descending=True)
    logits = []
    for start in range(0, len(split), batch_size):
        idx = order[start : start + batch_size]
        batch = {k: v.to(device) for k, v in split.batch(idx).items()}
        with _autocast(device, bf16):
            logits.append(encode(model, batch, Needs()).logits.float().cpu())
    model.train(was_training)
    z = torch.cat(logits)
    labels = split.labels[order]
    if spec.is_regression:
        loss = torch.nn.functional.mse_loss(z.squeeze(-1), labels.float())
    else:
        loss = torch.nn.functional.cross_entropy(z, labels)
    return {**compute_metrics(spec, z, labels), "loss": float(loss)}


class Run:
    """The training loop of one trial, resumable from its checkpoint."""

    def __init__(
        self,
        s: Setup,
        reporter: Reporter | None,
        progress: bool,
        run_id: str | None = None,
        allow_mutation: bool = False,
    ) -> None:
        self.s, self.cfg = s, s.cfg
        self.reporter = reporter or ListReporter()
        self.progress = progress
        self.allow_mutation = allow_mutation  # resume under other MUTABLE_PATHS values (PBT)
        tr, sel = s.cfg.trainer, s.cfg.selector
        self.out_dir = Path(tr.output_dir or tempfile.mkdtemp(prefix="kdray-run-")).resolve()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.run_id = run_id or self.out_dir.name
        self.static = {k: s.cfg.knowledge.weights.get(k, 1.0) for k in s.knowledge}
        self.episodes = sel.episodes if sel.mode == "two_stage" else 0  # stage-A episodes
        self.selector = build_selector(
            sel if sel.seed is not None else replace(sel, seed=tr.seed),
            tuple(s.knowledge.keys()),
        )
        self.measures_reward = measures_reward(sel)
        n_reward = len(s.data.reward)
        if sel.reward_examples is not None:
            n_reward = min(n_reward, sel.reward_examples)
        self.reward_split = s.data.reward.subset(torch.arange(n_reward))
        self.initial = {  # the fresh student every stage-A episode starts from
            "student": {k: v.detach().clone() for k, v in s.student.state_dict().items()},
            "knowledge": {k: v.detach().clone() for k, v in s.knowledge.state_dict().items()},
        }
        self.episode = 0
        self.new_episode()
        self.history: list[dict[str, Any]] = []
        self.phase_rows: list[dict[str, Any]] = []
        self.best: dict[str, float] = {}
        self.wall_before = 0.0
        self.t0 = time.perf_counter()

    # ---------------------------------------------------------------------------- episodes

    @property
    def final_episode(self) -> bool:
        return self.episode >= self.episodes

    def steps_in(self, episode: int) -> int:
        """Student steps of an episode: stage-A episodes may be shorter than the final run."""
        sel, tr = self.cfg.selector, self.cfg.trainer
        return tr.max_steps if episode >= self.episodes else (sel.episode_steps or tr.max_steps)

    @property
    def episode_steps(self) -> int:
        return self.steps_in(self.episode)

    def new_episode(self) -> None:
        """Fresh optimiser, schedule and data order; stage B reloads the initial student."""
        s, tr = self.s, self.cfg.trainer
        s.student.load_state_dict(self.initial["student"])
        s.knowledge.load_state_dict(self.initial["knowledge"])
        params = [*s.student.parameters(), *s.knowledge.parameters()]
        self.optimizer = torch.optim.AdamW(
            [
                {"params": [p for p in params if p.dim() >= 2], "weight_decay": tr.weight_decay},
                {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
            ],
            lr=tr.learning_rate,
            fused=True,  # one kernel for all parameters: ~5x faster steps than the loop on CPU
        )
        steps = self.episode_steps
        self.schedule = linear_schedule(self.optimizer, int(tr.warmup_ratio * steps), steps)
        seed = tr.seed if self.final_episode else tr.seed + 1000 * (self.episode + 1)
        self.order = BatchOrder(len(s.data.train), tr.batch_size, seed)
        self.step = 0
        self.phase = 0
        self.action: dict[str, float] = {}
        self.phase_sums: dict[str, float] = {}
        self.phase_steps = 0
        self.last_losses: dict[str, float] = {}
        self.reward_loss: float | None = None
        self.phase_val = math.nan
        if self.final_episode and self.episodes:
            self.selector.freeze()

    # ------------------------------------------------------------------------- checkpointing

    def save(self) -> None:
        state = {
            "config": self.cfg.to_dict(),
            "episode": self.episode,
            "step": self.step,
            "phase": self.phase,
            "action": self.action,
            "phase_sums": self.phase_sums,
            "phase_steps": self.phase_steps,
            "last_losses": self.last_losses,
            "reward_loss": self.reward_loss,
            "phase_val": self.phase_val,
            "history": self.history,
            "phase_rows": self.phase_rows,
            "best": self.best,
            "wall_s": self.wall_before + (time.perf_counter() - self.t0),
            "initial": self.initial if self.episodes else None,  # needed for new episodes
            "student": self.s.student.state_dict(),
            "knowledge": self.s.knowledge.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "selector": self.selector.state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }
        atomic_torch_save(state, self.out_dir / CHECKPOINT)
        self.write_phase_log()

    def restore(self) -> bool:
        path = self.out_dir / CHECKPOINT
        if not path.is_file():
            return False
        state = torch.load(path, weights_only=True, map_location="cpu")
        check_resumable(state["config"], self.cfg, self.allow_mutation, self.out_dir)
        if state["initial"] is not None:
            self.initial = state["initial"]
        self.episode = state["episode"]
        self.new_episode()  # optimiser and schedule for that episode, then their saved state
        self.s.student.load_state_dict(state["student"])
        self.s.knowledge.load_state_dict(state["knowledge"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.selector.load_state_dict(state["selector"])
        torch.set_rng_state(state["rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        for key in ("step", "phase", "action", "phase_sums", "phase_steps", "last_losses",
                    "reward_loss", "phase_val", "history", "phase_rows", "best"):  # fmt: skip
            setattr(self, key, state[key])
        self.wall_before = state["wall_s"]
        log.info("resumed %s at episode %d, step %d", self.out_dir, self.episode, self.step)
        return True

    def write_phase_log(self) -> None:
        """All phase rows so far as Parquet (rewritten atomically at every checkpoint)."""
        import pandas as pd

        with atomic_path(self.out_dir / PHASE_LOG) as tmp:
            pd.DataFrame(self.phase_rows).to_parquet(tmp, index=False)

    # ------------------------------------------------------------------------------ one step

    def teacher_features(self, batch: dict[str, torch.Tensor]) -> Features | None:
        s = self.s
        if s.teacher_outputs is not None:
            return s.teacher_outputs.features(batch["index"], s.device, s.teacher_needs)
        if s.teacher is None:
            return None
        with torch.no_grad(), _autocast(s.device, self.cfg.trainer.bf16):
            return encode(s.teacher, batch, s.teacher_needs)

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        idx = self.order(step)
        return {k: v.to(self.s.device) for k, v in self.s.data.train.batch(idx).items()}

    def losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The losses of the knowledge types active in this phase (a_k·w_k > 0)."""
        s = self.s
        active = [k for k in s.knowledge if self.action.get(k, 0.0) * self.static[k] > 0]
        if not active:
            return {}
        with _autocast(s.device, self.cfg.trainer.bf16):
            student = encode(s.student, batch, s.student_needs)
        teacher = None
        if any(s.knowledge[k].needs_teacher for k in active):
            teacher = self.teacher_features(batch)
        return {k: s.knowledge[k](student, teacher, batch) for k in active}

    def train_step(self) -> float:
        """One optimiser step on this step's batch; the weighted loss (0 if nothing active)."""
        losses = self.losses(self.batch(self.step))
        if not losses:  # a hard action that selects nothing: the phase trains nothing
            self.schedule.step()
            self.phase_steps += 1
            return 0.0
        total = torch.stack([self.action[k] * self.static[k] * v for k, v in losses.items()]).sum()
        value = float(total.detach())
        if not math.isfinite(value):
            return value
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, self.cfg.trainer.max_grad_norm)
        self.optimizer.step()
        self.schedule.step()
        for k, v in losses.items():
            self.phase_sums[k] = self.phase_sums.get(k, 0.0) + float(v.detach())
        self.phase_steps += 1
        return value

    # ------------------------------------------------------------------------------ phases

    def progress_frac(self) -> float:
        return self.step / self.episode_steps

    def measure_reward_loss(self) -> float:
        s, tr = self.s, self.cfg.trainer
        return evaluate(
            s.student, self.reward_split, s.spec, s.device, tr.eval_batch_size, tr.bf16
        )["loss"]

    @torch.no_grad()
    def mean_cls(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean last-layer [CLS] of student and teacher over this phase's first batch."""
        s = self.s
        batch = self.batch(self.step)
        was_training = s.student.training
        s.student.eval()
        with _autocast(s.device, self.cfg.trainer.bf16):
            hs = encode(s.student, batch, Needs(hidden=frozenset({s.student_layers})))
        s.student.train(was_training)
        teacher = self.teacher_features(batch)
        assert teacher is not None
        cls_s = hs.hidden[s.student_layers][:, 0].float().mean(0)  # (d_S,)
        cls_t = teacher.hidden[s.teacher_layers][:, 0].float().mean(0)  # (d_T,)
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

    def end_phase(self) -> None:
        losses = {k: v / max(1, self.phase_steps) for k, v in self.phase_sums.items()}
        before = after = None
        if self.measures_reward:
            before, after = self.reward_loss, self.measure_reward_loss()
            self.reward_loss = after
        self.selector.end_phase(
            PhaseOutcome(
                phase=self.phase,
                step=self.step,
                progress=self.progress_frac(),
                action=dict(self.action),
                losses=losses,
                reward_loss_before=before,
                reward_loss_after=after,
                last=self.step >= self.episode_steps,
                phases=math.ceil(self.episode_steps / self.cfg.selector.phase_length),
            )
        )
        row: dict[str, Any] = {
            "run_id": self.run_id,
            "selector": self.cfg.selector.kind,
            "episode": self.episode,
            "final": self.final_episode,
            "phase": self.phase,
            "step": self.step,
            "progress": self.progress_frac(),
            "progress_start": (self.step - self.phase_steps) / self.episode_steps,
            **{f"w_{k}": w for k, w in self.weights().items()},
            **{f"loss_{k}": losses.get(k, math.nan) for k in self.s.knowledge},
            "reward": math.nan,
            "q_value": math.nan,
            "reward_loss": math.nan if after is None else after,
            "reward_drop": math.nan if after is None or before is None else before - after,
            "val_metric": self.phase_val,
            **self.selector.log_fields(),
        }
        self.phase_rows.append(row)
        self.last_losses = losses
        self.phase += 1
        self.action = {}
        self.phase_val = math.nan

    # -------------------------------------------------------------------------------- eval

    def validate(self, train_loss: float) -> dict[str, Any]:
        s, tr = self.s, self.cfg.trainer
        metrics = evaluate(
            s.student, s.data.validation, s.spec, s.device, tr.eval_batch_size, tr.bf16
        )
        main = s.spec.main_metric
        last = self.phase_rows[-1] if self.phase_rows else None
        if last and last["episode"] == self.episode and last["step"] == self.step:
            last["val_metric"] = metrics[main]  # the phase that just ended
        else:
            self.phase_val = metrics[main]  # goes to the row of the phase under way
        row: dict[str, Any] = {
            "step": self.step,
            "progress": self.progress_frac(),
            "train_loss": train_loss,
            **{f"val_{k}": v for k, v in metrics.items()},
            "val_metric": metrics[main],
            "lr": self.schedule.get_last_lr()[0],
            **self.weight_summary(),
            **{f"selector/{k}": v for k, v in self.selector.diagnostics().items()},
        }
        if not self.best or metrics[main] > self.best["val_metric"]:
            self.best = {"val_metric": metrics[main], "step": float(self.step)}
        row["best_val_metric"] = self.best["val_metric"]
        self.history.append(row)
        return row

    def weights(self) -> dict[str, float]:
        """The phase's effective weight per knowledge type: action × static weight."""
        return {k: self.action.get(k, 0.0) * self.static[k] for k in self.s.knowledge}

    def weight_summary(self) -> dict[str, float]:
        """Mean weight per knowledge type, their spread over phases and the share of weights
        within 0.05 of 0 or 1, over the phases of the final episode that ended since the last
        evaluation, else the phase under way (a collapsed or saturated policy shows here)."""
        since = self.history[-1]["step"] if self.history else -1
        rows = [
            [r[f"w_{k}"] for k in self.s.knowledge]
            for r in self.phase_rows
            if r["final"] and r["step"] > since
        ]
        if not rows and self.action and self.final_episode:
            rows = [list(self.weights().values())]
        if not rows:
            return {}
        w = torch.tensor(rows)  # (P, K)
        out = {
            f"selector/weight_{k}": float(v)
            for k, v in zip(self.s.knowledge, w.mean(0), strict=True)
        }
        out["selector/action_spread"] = float(w.std(0, unbiased=False).mean())
        out["selector/action_saturation"] = float(((w < 0.05) | (w > 0.95)).float().mean())
        return out

    def test(self) -> dict[str, dict[str, float]]:
        s, tr = self.s, self.cfg.trainer
        return {
            name: evaluate(s.student, split, s.spec, s.device, tr.eval_batch_size, tr.bf16)
            for name, split in s.data.test.items()
        }

    # -------------------------------------------------------------------------------- run

    def advance(self) -> float:
        """One student step, with its phase started before it or ended after it when due.
        Returns the step's weighted loss (non-finite: nothing was updated)."""
        K = self.cfg.selector.phase_length
        if self.step % K == 0 and not self.action:
            self.start_phase()
        loss = self.train_step()
        if not math.isfinite(loss):
            return loss
        self.step += 1
        if self.step % K == 0 or self.step == self.episode_steps:
            self.end_phase()
        return loss

    def run(self) -> RunResult:
        self.t0 = time.perf_counter()
        tr = self.cfg.trainer
        self.restore()
        self.s.student.train()
        status = "finished"
        total = sum(self.steps_in(e) for e in range(self.episodes + 1))
        done = self.step + sum(self.steps_in(e) for e in range(self.episode))
        bar = tqdm(total=total, initial=done, desc="distil", disable=not self.progress,
                   dynamic_ncols=True)  # fmt: skip
        running: list[float] = []
        with bar:
            while True:
                bar.set_description("distil" if self.final_episode else
                                    f"episode {self.episode + 1}/{self.episodes}")  # fmt: skip
                steps = self.episode_steps
                while self.step < steps:
                    loss = self.advance()
                    if not math.isfinite(loss):
                        status = "diverged"
                        log.warning("non-finite loss at step %d: run diverged", self.step)
                        break
                    running.append(loss)
                    bar.update(1)
                    if self.final_episode and (
                        self.step % tr.eval_every == 0 or self.step == steps
                    ):
                        row = self.validate(float(np.mean(running)) if running else math.nan)
                        running = []
                        bar.set_postfix(val=f"{row['val_metric']:.4f}",
                                        loss=f"{row['train_loss']:.3f}")  # fmt: skip
                        self.save()
                        if self.step < steps:
                            self.reporter.report({**row, "done": False},
                                                 checkpoint_dir=str(self.out_dir))  # fmt: skip
                if status != "finished" or self.final_episode:
                    break
                self.selector.end_episode()
                self.episode += 1
                self.new_episode()
                self.save()
        return self.finish(status)

    def finish(self, status: str) -> RunResult:
        s, tr = self.s, self.cfg.trainer
        test = self.test() if status == "finished" else {}
        student_dir = None
        if status == "finished" and tr.save_student:
            student_dir = str(self.out_dir / "student")
            with atomic_dir(Path(student_dir)) as tmp:  # never a half-written student folder
                s.student.save_pretrained(tmp)
        self.write_phase_log()
        last = self.history[-1] if self.history else {}
        wall = self.wall_before + (time.perf_counter() - self.t0)
        result = RunResult(
            status=status,
            steps=self.step,
            validation={k[4:]: v for k, v in last.items() if k.startswith("val_")},
            test=test,
            main_metric=s.spec.main_metric,
            wall_s=wall,
            output_dir=str(self.out_dir),
            student_dir=student_dir,
            teacher=s.teacher_path,
            teacher_cache=s.cache_mode,
            history=self.history,
        )
        final = {
            **last,
            "status": status,
            "step": self.step,
            "done": True,
            "wall_s": wall,
            **{f"test_{name}_{k}": v for name, m in test.items() for k, v in m.items()},
        }
        if test:
            final["test_metric"] = result.test_score
        if status == "diverged":
            final.setdefault("val_metric", float("nan"))
        atomic_write_text(self.out_dir / RESULTS, json.dumps(asdict(result), indent=2))
        self.reporter.report(final, checkpoint_dir=str(self.out_dir))
        return result


def _resumable(config: dict[str, Any], allow_mutation: bool = False) -> dict[str, Any]:
    """The config paths that must not change between a run and its resumption, as the run
    used them: keys an older checkpoint lacks take their defaults, and an unset selector.seed
    is trainer.seed."""
    flat = {**flat_paths(TrialConfig().to_dict()), **flat_paths(config)}
    if flat["selector.seed"] is None:
        flat["selector.seed"] = flat["trainer.seed"]
    return {
        path: v
        for path, v in flat.items()
        if path not in ("cache_dir", "trainer.output_dir")
        and not (allow_mutation and is_mutable(path))
    }


def check_resumable(
    saved: dict[str, Any], cfg: TrialConfig, allow_mutation: bool, out_dir: Path
) -> None:
    """A checkpoint in `out_dir` (of config `saved`) continues only a run of the same config."""
    before, now = (_resumable(c, allow_mutation) for c in (saved, cfg.to_dict()))
    if before != now:
        changed = sorted(p for p in before.keys() | now.keys() if before.get(p) != now.get(p))
        raise ConfigError(
            f"{out_dir} holds a checkpoint of a run with another config (differs in "
            f"{', '.join(changed)}); resume with the same config, or use a fresh "
            f"trainer.output_dir"
        )


def check_output_dir(cfg: TrialConfig, allow_mutation: bool = False) -> None:
    """Before any work: trainer.output_dir is a folder (or not there yet), and a checkpoint
    in it is of this config (only its config is read: the tensors are memory-mapped)."""
    if cfg.trainer.output_dir is None:
        return
    out = Path(cfg.trainer.output_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise ConfigError(
            f"'trainer.output_dir' {out} is a file; give a folder (new, or holding this "
            f"run's checkpoint to resume)"
        )
    if (out / CHECKPOINT).is_file():
        state = torch.load(out / CHECKPOINT, weights_only=True, map_location="cpu", mmap=True)
        check_resumable(state["config"], cfg, allow_mutation, out)


def run_trial(
    cfg: TrialConfig,
    reporter: Reporter | None = None,
    progress: bool = False,
    teacher_outputs: TeacherOutputs | None = None,
    run_id: str | None = None,
    allow_mutation: bool = False,
) -> RunResult:
    """Run (or resume, when output_dir holds a checkpoint) one distillation trial.

    `run_id` names the run in its phase log (default: the output folder's name);
    `allow_mutation` lets the checkpoint come from a run with other MUTABLE_PATHS values.
    """
    check_output_dir(cfg, allow_mutation)
    s = setup(cfg, progress=progress, teacher_outputs=teacher_outputs)
    return Run(s, reporter, progress, run_id=run_id, allow_mutation=allow_mutation).run()
