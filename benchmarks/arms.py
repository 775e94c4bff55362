"""Shared by the benchmarks that compare methods ("arms") over seeds on GLUE dev: one finished
run (`Done`), its per-example dev correctness, an arm's row of the JSON and the paired
comparison of two arms (per-seed differences, a 95% interval over seeds and dev examples)."""

from __future__ import annotations

import contextlib
import math
import shutil
import statistics
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import print_paired, print_table

from kdray.analysis.stats import score_bootstrap, verdict
from kdray.base.io import cache_root
from kdray.base.results import RunResult
from kdray.config import TrialConfig
from kdray.config.recipes import merged
from kdray.data.dataset import TaskData, TokenizedSplit, load_task
from kdray.knowledge.logits import matched_smoothing, mean_entropy
from kdray.models.classifier import load_classifier
from kdray.models.device import pick_device
from kdray.training.checks import check_trial
from kdray.training.fine_tune import resolve_teachers
from kdray.training.loop import predict
from kdray.training.trainer import distil


@dataclass
class Done:
    """One finished run: its result and config, its validation main metric, and (for the
    arms compared pairwise) its (N,) per-example correctness on dev."""

    result: RunResult
    cfg: TrialConfig
    val: float
    right: np.ndarray | None = None


def arm_config(raw: dict[str, Any], over: dict[str, Any], trainer: dict[str, Any]) -> TrialConfig:
    """The base config `raw` with the arm's sections `over` and the run's `trainer` keys."""
    return TrialConfig.from_dict(merged(merged(raw, over), {"trainer": trainer}))


def prepare(
    raw: dict[str, Any], arms: dict[str, dict[str, Any]], work: Path
) -> tuple[TrialConfig, dict[str, str], TaskData]:
    """Every arm's config checked before any work; the base config's teachers (fine-tuned
    once, cached) and its data. Returns (base config, teacher folders, data)."""
    for name, over in arms.items():
        check_trial(arm_config(raw, over, {"output_dir": str(work / name)}))
    base = TrialConfig.from_dict(raw)
    paths = resolve_teachers(base, progress=True)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(paths[base.teacher_list()[0].name or ""])
    return base, paths, load_task(base.data, tokenizer, cache_root(base))


def run_arm(
    raw: dict[str, Any],
    name: str,
    over: dict[str, Any],
    seed: int,
    work: Path,
    dev: TokenizedSplit,
    paths: dict[str, str] | None = None,
) -> Done:
    """Arm `name` at `seed` in work/<name>-s<seed> (a finished folder is read back), its
    student's per-example dev correctness, and one printed line. `paths`: the teachers'
    folders (None: this arm's own, resolved and cached)."""
    cfg = arm_config(raw, over, {"seed": seed, "save_student": True,
                                 "output_dir": str(work / f"{name}-s{seed}")})  # fmt: skip
    result = distil(cfg, teacher_paths=paths or resolve_teachers(cfg, progress=True))
    if result.status != "finished" or result.student_dir is None:
        raise SystemExit(f"{name} seed {seed}: run {result.status} at step {result.steps}")
    right = correctness(load_classifier(result.student_dir), dev, cfg)
    val = result.validation.get(result.main_metric, math.nan)
    print(f"  {name} seed {seed}: dev {result.test_score:.4f}, validation {val:.4f} "
          f"({result.wall_s:.0f} s)", flush=True)  # fmt: skip
    return Done(result, cfg, val, right)


def logits_on(model: Any, split: TokenizedSplit, cfg: TrialConfig) -> Any:
    """(N, C) logits of `model` on `split`, on cfg's device and eval batch size."""
    device, tr = pick_device(cfg.trainer.device), cfg.trainer
    model.to(device)
    return predict(model, split, device, tr.eval_batch_size, tr.bf16)


def correctness(model: Any, split: TokenizedSplit, cfg: TrialConfig) -> np.ndarray:
    """(N,) 1.0 where `model` predicts example i of `split` right, else 0.0."""
    return (logits_on(model, split, cfg).argmax(1) == split.labels).double().numpy()


def matched_epsilon(teacher_dir: str, split: TokenizedSplit, cfg: TrialConfig) -> dict[str, float]:
    """The label smoothing ε whose targets are as soft, on average, as the teacher's soft
    labels on `split` at cfg's temperature (the control arm for "a teacher's soft labels"
    against "soft labels"): {"epsilon", "teacher_entropy"} (nats)."""
    logits = logits_on(load_classifier(teacher_dir), split, cfg)
    entropy = mean_entropy(logits, cfg.knowledge.temperature)
    return {"epsilon": matched_smoothing(entropy, logits.shape[1]), "teacher_entropy": entropy}


def finite_mean(values: list[float]) -> float:
    ok = [v for v in values if math.isfinite(v)]
    return statistics.mean(ok) if ok else math.nan


def json_float(v: float) -> float | None:
    """NaN (undefined) as JSON null."""
    return v if math.isfinite(v) else None


def method_row(runs: dict[int, Done], constant: float) -> dict[str, Any]:
    """An arm's dev scores over its seeds (seed order) and its mean wall time per run."""
    scores = [runs[s].result.test_score for s in sorted(runs)]
    mean = statistics.mean(scores)
    return {
        "mean": mean,
        "std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
        "runs": scores,
        "wall_s": statistics.mean(d.result.wall_s for d in runs.values()),
        "beats_constant": mean > constant,
    }


def paired(a: str, b: str, done: dict[str, dict[int, Done]]) -> dict[str, Any]:
    """Arm a − arm b on the seeds both ran: the mean of the per-seed dev differences and its
    95% interval over seeds and dev examples (`paired_contrast`)."""
    return paired_contrast({a: 1.0, b: -1.0}, done) | {"a": a, "b": b}


def paired_contrast(weights: dict[str, float], done: dict[str, dict[int, Done]]) -> dict[str, Any]:
    """Σ_arm weight·score on the seeds every arm ran, e.g. {a: 1, b: −1} (a − b) or
    {m12: 1, m3: −1, v12: −1, v3: 1} (MLKD's 12→3-head drop minus vanilla's): the mean of the
    per-seed contrasts and its Multi-Bootstrap 95% interval (`score_bootstrap` on each arm's
    per-seed dev correctness: seeds, then dev examples, drawn with replacement, the same draws
    for every arm; with one seed the examples only, as `covers` says), and beside it the
    interval over dev examples alone (`examples95`, what kdray reported before)."""
    seeds = sorted(set.intersection(*(set(done[k]) for k in weights)))
    per_seed = [sum(w * done[k][s].result.test_score for k, w in weights.items()) for s in seeds]
    right = [(w, np.stack([done[k][s].right for s in seeds])) for k, w in weights.items()]
    boot = score_bootstrap(right, n_boot=10000, seed=0)
    return {"mean": statistics.mean(per_seed), "per_seed": per_seed,
            "ci95": list(boot["ci95"]), "verdict": verdict(boot["ci95"]),
            "seeds": len(seeds), "examples": boot["examples"], "covers": boot["covers"],
            "examples95": list(boot["examples95"])}  # fmt: skip


def print_arms(out: dict[str, Any], title: str, marks: dict[str, str] | None = None) -> None:
    """The arms' table (dev mean ± std over seeds against the constant prediction) and the
    paired comparisons' table; sets out["any_beats_constant"]. `marks`: a note after an
    arm's name (e.g. "(best single)")."""
    marks = marks or {}
    methods = out["methods"]
    rows: list[dict[str, Any]] = [{"arm": "(constant)", "dev": f"{out['constant']:.4f}"}]
    for name, m in methods.items():
        rows.append({
            "arm": f"{name} {marks[name]}" if name in marks else name,
            "dev": f"{m['mean']:.4f} ± {m['std']:.4f}",
            "runs": len(m["runs"]),
            "wall_s": f"{m['wall_s']:.0f}",
            "beats_constant": "yes" if m["beats_constant"] else "NO",
        })  # fmt: skip
    print(f"\n{title}")
    print_table(rows, ["arm", "dev", "runs", "wall_s", "beats_constant"])
    out["any_beats_constant"] = any(m["beats_constant"] for m in methods.values())
    if not out["any_beats_constant"]:
        print(f"no arm beats the constant prediction ({out['constant']:.4f}): the differences "
              f"between arms here are noise, not knowledge transfer")  # fmt: skip
    print_paired(
        [{"comparison": k + (f" ({v['a']} − {v['b']})" if "a" in v else ""), **v}
         for k, v in out.get("paired", {}).items()]
    )  # fmt: skip


@contextlib.contextmanager
def work_folder(work: str | None, prefix: str) -> Iterator[Path]:
    """The run folders' parent: --work DIR (created, kept: a rerun reuses finished runs) or a
    temporary folder, removed at the end."""
    if work:
        Path(work).mkdir(parents=True, exist_ok=True)
        yield Path(work).resolve()
        return
    tmp = tempfile.mkdtemp(prefix=prefix)
    try:
        yield Path(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
