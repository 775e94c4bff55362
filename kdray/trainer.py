"""One distillation run from one `TrialConfig`. No Ray import: results leave through a Reporter.

    setup (validate shapes from configs -> data -> teacher -> student -> knowledge -> selector)
    for each phase of K steps:
        a = selector.start_phase(state)                      # action per knowledge type
        K x: L = Σ_k a_k·w_k·L_k (types with a_k·w_k = 0 not computed); AdamW step
        selector.end_phase(outcome)
        every eval_every steps: validation metrics -> checkpoint -> reporter.report
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoTokenizer, PretrainedConfig, PreTrainedModel
from transformers import get_linear_schedule_with_warmup as linear_schedule

from kdray.config import TrialConfig
from kdray.data import TaskData, TaskSpec, TokenizedSplit, load_task
from kdray.errors import ConfigError
from kdray.io import atomic_torch_save, atomic_write_text
from kdray.knowledge import active_types, build_knowledge, check_shapes, needs_of
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
from kdray.selector import PhaseOutcome, PhaseState, build_selector
from kdray.teacher_cache import (
    TeacherOutputs,
    cache_key,
    compute_teacher_outputs,
    estimate_bytes,
    load_or_compute,
)

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
RESULTS = "results.json"


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


def teacher_path_for(cfg: TrialConfig, progress: bool) -> str:
    """The configured teacher, or the kdray-fine-tuned one (fine-tuned now if not cached)."""
    if cfg.teacher.path:
        return resolve_backbone(cfg.teacher.path)
    from kdray.teacher import ensure_teacher

    return ensure_teacher(cfg, progress=progress)


def setup(
    cfg: TrialConfig,
    progress: bool = False,
    teacher_outputs: TeacherOutputs | None = None,
) -> Setup:
    """Validate everything that can be checked cheaply, then load data and models."""
    from kdray.data import TASKS

    spec = TASKS[cfg.data.task]
    device = pick_device(cfg.trainer.device)
    types = active_types(cfg.knowledge, spec.is_regression)
    pretrained = cfg.student.init == "pretrained"
    needs_teacher = not pretrained and (
        cfg.student.init == "remap" or any(t != "hard" for t in types)
    )
    if pretrained:
        source = resolve_backbone(cfg.teacher.backbone)
        t_config: PretrainedConfig = load_config(source)
        t_path: str | None = None
    else:
        t_path = teacher_path_for(cfg, progress)
        t_config = load_config(t_path)
        check_teacher_task(t_path, t_config, spec)
        source = t_path
    t_shape = Shape.of(t_config)
    s_shape = student_shape(cfg.student, t_shape)
    check_shapes(cfg.knowledge, s_shape, t_shape)
    g = layer_map(cfg.student, t_shape.layers)

    tokenizer = AutoTokenizer.from_pretrained(source)
    data = load_task(cfg.data, tokenizer, cache_root(cfg), progress=progress)

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
    uses_teacher_outputs = any(m.needs_teacher for m in knowledge.values())
    if not uses_teacher_outputs:
        teacher_outputs = None
    elif teacher_outputs is not None:
        if not teacher_outputs.covers(t_needs) or len(teacher_outputs.logits) != len(data.train):
            raise ConfigError(
                "the shared teacher outputs do not cover this trial's knowledge or data; "
                "compute them for the union of the trials' needs on the same train split"
            )
        cache_mode = "cached (shared)"
    elif cfg.trainer.teacher_cache:
        budget = cfg.trainer.teacher_cache_max_mb * 2**20
        size = estimate_bytes(data.train, t_needs, t_shape.width, t_shape.heads)
        if size <= budget:
            assert teacher is not None and t_path is not None
            live_teacher = teacher
            key = cache_key(t_path, data.fingerprint, "train", t_needs)
            teacher_outputs = load_or_compute(
                cache_root(cfg),
                key,
                lambda: compute_teacher_outputs(
                    live_teacher,
                    data.train,
                    t_needs,
                    batch_size=cfg.trainer.eval_batch_size,
                    device=device,
                    progress=progress,
                    autocast=device.type == "cuda" and cfg.trainer.bf16,
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
    if teacher_outputs is not None and not (t_needs.attn_probs or cfg.student.init == "remap"):
        teacher = None  # not needed any more: free its memory
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
    """Metrics and mean hard loss of `model` on `split` (longest-first batches)."""
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

    def __init__(self, s: Setup, reporter: Reporter | None, progress: bool) -> None:
        self.s, self.cfg = s, s.cfg
        self.reporter = reporter or ListReporter()
        self.progress = progress
        tr = s.cfg.trainer
        params = [p for p in s.student.parameters()] + [p for p in s.knowledge.parameters()]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        self.optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": tr.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=tr.learning_rate,
        )
        self.schedule = linear_schedule(
            self.optimizer, int(tr.warmup_ratio * tr.max_steps), tr.max_steps
        )
        self.selector = build_selector(s.cfg.selector, tuple(s.knowledge.keys()))
        self.order = BatchOrder(len(s.data.train), tr.batch_size, tr.seed)
        self.static = {k: s.cfg.knowledge.weights.get(k, 1.0) for k in s.knowledge}
        self.out_dir = Path(tr.output_dir or tempfile.mkdtemp(prefix="kdray-run-")).resolve()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.step = 0
        self.phase = 0
        self.action: dict[str, float] = {}
        self.phase_sums: dict[str, float] = {}
        self.phase_steps = 0
        self.last_losses: dict[str, float] = {}
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, float] = {}
        self.wall_before = 0.0
        torch.manual_seed(tr.seed)

    # ------------------------------------------------------------------------- checkpointing

    def save(self) -> None:
        state = {
            "step": self.step,
            "phase": self.phase,
            "action": self.action,
            "phase_sums": self.phase_sums,
            "phase_steps": self.phase_steps,
            "last_losses": self.last_losses,
            "history": self.history,
            "best": self.best,
            "wall_s": self.wall_before + (time.perf_counter() - self.t0),
            "student": self.s.student.state_dict(),
            "knowledge": self.s.knowledge.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "selector": self.selector.state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }
        atomic_torch_save(state, self.out_dir / CHECKPOINT)

    def restore(self) -> bool:
        path = self.out_dir / CHECKPOINT
        if not path.is_file():
            return False
        state = torch.load(path, weights_only=True, map_location="cpu")
        self.s.student.load_state_dict(state["student"])
        self.s.knowledge.load_state_dict(state["knowledge"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.selector.load_state_dict(state["selector"])
        torch.set_rng_state(state["rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        for key in ("step", "phase", "action", "phase_sums", "phase_steps", "last_losses"):
            setattr(self, key, state[key])
        self.history, self.best = state["history"], state["best"]
        self.wall_before = state["wall_s"]
        log.info("resumed %s at step %d", self.out_dir, self.step)
        return True

    # ------------------------------------------------------------------------------ one step

    def teacher_features(self, batch: dict[str, torch.Tensor]) -> Features | None:
        s = self.s
        if s.teacher_outputs is not None:
            return s.teacher_outputs.features(batch["index"], s.device, s.teacher_needs)
        if s.teacher is None:
            return None
        with torch.no_grad(), _autocast(s.device, self.cfg.trainer.bf16):
            return encode(s.teacher, batch, s.teacher_needs)

    def losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The losses of the knowledge types active in this phase (a_k·w_k > 0)."""
        s = self.s
        active = [k for k in s.knowledge if self.action.get(k, 0.0) * self.static[k] > 0]
        with _autocast(s.device, self.cfg.trainer.bf16):
            student = encode(s.student, batch, s.student_needs)
        teacher = None
        if any(s.knowledge[k].needs_teacher for k in active):
            teacher = self.teacher_features(batch)
        return {k: s.knowledge[k](student, teacher, batch) for k in active}

    def train_step(self) -> float:
        s = self.s
        idx = self.order(self.step)
        batch = {k: v.to(s.device) for k, v in s.data.train.batch(idx).items()}
        losses = self.losses(batch)
        total = sum(self.action[k] * self.static[k] * v for k, v in losses.items())
        assert isinstance(total, torch.Tensor)
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
        return self.step / self.cfg.trainer.max_steps

    def start_phase(self) -> None:
        state = PhaseState(
            phase=self.phase,
            step=self.step,
            progress=self.progress_frac(),
            last_losses=dict(self.last_losses),
        )
        self.action = self.selector.start_phase(state)
        self.phase_sums, self.phase_steps = {}, 0

    def end_phase(self) -> None:
        losses = {k: v / max(1, self.phase_steps) for k, v in self.phase_sums.items()}
        self.selector.end_phase(
            PhaseOutcome(
                phase=self.phase,
                step=self.step,
                progress=self.progress_frac(),
                action=dict(self.action),
                losses=losses,
            )
        )
        self.last_losses = losses
        self.phase += 1
        self.action = {}

    # ------------------------------------------------------------------------------- eval

    def validate(self, train_loss: float) -> dict[str, Any]:
        s, tr = self.s, self.cfg.trainer
        metrics = evaluate(
            s.student, s.data.validation, s.spec, s.device, tr.eval_batch_size, tr.bf16
        )
        main = s.spec.main_metric
        row: dict[str, Any] = {
            "step": self.step,
            "progress": self.progress_frac(),
            "train_loss": train_loss,
            **{f"val_{k}": v for k, v in metrics.items()},
            "val_metric": metrics[main],
            "lr": self.schedule.get_last_lr()[0],
            **{f"selector/{k}": v for k, v in self.selector.diagnostics().items()},
        }
        if not self.best or metrics[main] > self.best["val_metric"]:
            self.best = {"val_metric": metrics[main], "step": float(self.step)}
        row["best_val_metric"] = self.best["val_metric"]
        self.history.append(row)
        return row

    def test(self) -> dict[str, dict[str, float]]:
        s, tr = self.s, self.cfg.trainer
        return {
            name: evaluate(s.student, split, s.spec, s.device, tr.eval_batch_size, tr.bf16)
            for name, split in s.data.test.items()
        }

    # -------------------------------------------------------------------------------- run

    def run(self) -> RunResult:
        self.t0 = time.perf_counter()
        tr = self.cfg.trainer
        K = self.cfg.selector.phase_length
        self.restore()
        self.s.student.train()
        status = "finished"
        bar = tqdm(
            total=tr.max_steps,
            initial=self.step,
            desc="distil",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        running: list[float] = []
        with bar:
            while self.step < tr.max_steps:
                if self.step % K == 0 and not self.action:
                    self.start_phase()
                loss = self.train_step()
                if not math.isfinite(loss):
                    status = "diverged"
                    log.warning("non-finite loss at step %d: run diverged", self.step)
                    break
                running.append(loss)
                self.step += 1
                bar.update(1)
                if self.step % K == 0 or self.step == tr.max_steps:
                    self.end_phase()
                if self.step % tr.eval_every == 0 or self.step == tr.max_steps:
                    row = self.validate(float(np.mean(running)) if running else float("nan"))
                    running = []
                    bar.set_postfix(val=f"{row['val_metric']:.4f}", loss=f"{row['train_loss']:.3f}")
                    self.save()
                    if self.step < tr.max_steps:
                        self.reporter.report(
                            {**row, "done": False}, checkpoint_dir=str(self.out_dir)
                        )
        return self.finish(status)

    def finish(self, status: str) -> RunResult:
        s, tr = self.s, self.cfg.trainer
        test = self.test() if status == "finished" else {}
        student_dir = None
        if status == "finished" and tr.save_student:
            student_dir = str(self.out_dir / "student")
            s.student.save_pretrained(student_dir)
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


def run_trial(
    cfg: TrialConfig,
    reporter: Reporter | None = None,
    progress: bool = False,
    teacher_outputs: TeacherOutputs | None = None,
) -> RunResult:
    """Run (or resume, when output_dir holds a checkpoint) one distillation trial."""
    s = setup(cfg, progress=progress, teacher_outputs=teacher_outputs)
    return Run(s, reporter, progress).run()
