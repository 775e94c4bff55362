"""Distillation from a weak teacher (DWT): does a smaller, weaker teacher help a
larger student trained from random init, and how does that depend on how weak it is?

    python benchmarks/weak_teacher.py --data-dir ../shared/glue --out weak_teacher.json
    python benchmarks/weak_teacher.py --data-dir ../shared/glue --quick   # under 10 min
    python benchmarks/weak_teacher.py ... --seeds 3 --work runs/ --weak gap10

The paper (Lee et al., Findings of ACL 2023) distils during pre-training; kdray applies the
idea to task distillation, with the `dwt` recipe: loss α_h·hard + α_s(t)·soft, τ = 1, a
2-layer student from random init, SST-2 (max length 64), one data carving for every run.

Teachers: the backbone's first layer (all-MiniLM-L6-v2, `teacher.num_layers: 1`) fine-tuned on
hard labels for a ladder of step counts (each cached by kdray like any teacher; they train on
the students' data carving, never on its validation or reward splits). The stand-alone student
(hard labels only) runs first, for every seed; then each ladder teacher's validation score
(on the students' validation split) is measured and, for each target gap (2, 10 and 20 points
below the stand-alone student's mean validation score), the ladder teacher nearest to it is
taken. The gaps reached are reported as measured.

Arms (the same seeds and data for all):

    standalone     hard labels only
    a1_gapG        α_s = 1 with the teacher G points below (G = 2, 10, 20)
    a4_weak        α_s = 4 (constant) with the weak teacher (--weak, default gap2: the
                   paper's helpful setting, a teacher a little below the student)
    linear_weak    α_s from 4 down to 1 over training (DWT's suggestion), the weak teacher
    remap_weak     α_s = 1, the weak teacher, student.init remap (student layer i <- teacher
                   layer i while i <= M, above it the teacher's last layer; embeddings copied)
    smooth_0.1     hard labels only, smoothed with ε = 0.1 (`knowledge.label_smoothing`)
    smooth_matched hard labels only, smoothed with the ε whose targets are as soft as the weak
                   teacher's soft labels on the training rows (mean entropy at τ = 1)

The smoothing arms tell "soft targets from a teacher" apart from "soft targets": a teacher
arm that beats stand-alone but not smooth_matched gains what any soft target gives.

kdray's teacher-quality gate (`teacher_gate`, on by default: every teacher here is smaller than
the student) trains its hard-only reference once and records each run's `teacher_gap`; the
JSON keeps the gate's verdict per teacher.

Reported: dev accuracy per arm (mean ± std over seeds), validation at 25% and 50% of training (the
paper: a strong α_s converges faster, a normal one ends higher), and paired comparisons with 95%
intervals (resampling seeds and dev examples, the same draws for both arms): each α_s = 1 arm −
standalone (the gain or loss by gap), α_s 4 − 1, linear − 1, remap − random init, each smoothing arm
− standalone, and the weak and weakest teachers' α_s = 1 arms − smooth_matched and − smooth_0.1.
Students and teachers train at the dwt recipe's learning rate, 1e-3. Full: 8000 training examples,
max length 64, 240 steps of batch 32, 2 seeds; --quick: 2000, max length 32, 80 steps of batch 32, 1
seed, a shorter ladder. Two targets that pick the same teacher share their runs (`same_as` in the
JSON). Run folders go to a temporary folder (removed) or --work DIR (kept; reruns reuse finished
runs).
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Any

from arms import (
    matched_epsilon,
    method_row,
    paired_contrast,
    prepare,
    print_arms,
    run_arm,
    work_folder,
)
from bench_common import machine, parser, print_table, quiet_hf, write_json

from kdray.config import TrialConfig
from kdray.data.metrics import constant_score
from kdray.data.tasks import TASKS
from kdray.training.fine_tune import resolve_teachers
from kdray.training.teacher_gate import teacher_validation

#: Teacher fine-tune steps tried (1 layer of the backbone, batch 32, learning rate 1e-3). On
#: SST-2 (8000 examples) the teacher predicts the majority class up to 80 steps (validation
#: 0.5575) and 0.7625 at 100: the steps in between are where the intermediate teachers are.
LADDER = (8, 16, 32, 64, 80, 84, 88, 92, 96, 100)
#: Target gaps, in points below the stand-alone student's validation score.
TARGETS = {"gap2": 2.0, "gap10": 10.0, "gap20": 20.0}


def settings(quick: bool) -> dict[str, Any]:
    if quick:
        return {"examples": 2000, "steps": 80, "batch_size": 32, "max_length": 32,
                "phase_length": 10, "ladder": (32, 64, 100)}  # fmt: skip
    return {"examples": 8000, "steps": 240, "batch_size": 32, "max_length": 64,
            "phase_length": 20, "ladder": LADDER}  # fmt: skip


def teacher_section(st: dict[str, Any], steps: int) -> dict[str, Any]:
    return {"backbone": "minilm", "num_layers": 1, "max_steps": steps, "batch_size": 32,
            "learning_rate": 1e-3, "max_train_examples": st["examples"], "seed": 0}  # fmt: skip


def base_config(args: Any, st: dict[str, Any]) -> dict[str, Any]:
    return {
        "recipe": "dwt",
        "data": {"task": "sst2", "data_dir": args.data_dir, "max_length": st["max_length"],
                 "max_train_examples": st["examples"]},
        "teacher": teacher_section(st, st["ladder"][-1]),
        "selector": {"phase_length": st["phase_length"]},
        "trainer": {"max_steps": st["steps"], "batch_size": st["batch_size"],
                    "eval_every": max(1, st["steps"] // 4), "seed": 0},
        "cache_dir": args.cache_dir,
    }  # fmt: skip


def arms(
    st: dict[str, Any], picked: dict[str, int], weak: str, epsilon: float
) -> dict[str, dict[str, Any]]:
    """Arm name -> config sections over the base (teachers by their ladder step count;
    `epsilon`: smooth_matched's label smoothing)."""

    def dwt(target: str, **over: Any) -> dict[str, Any]:
        return {"teacher": teacher_section(st, picked[target]), **over}

    one = {"knowledge": {"weights": {"soft": 1.0}}}
    out: dict[str, dict[str, Any]] = {"standalone": {"knowledge": {"types": ["hard"]}}}
    out |= {f"a1_{t}": dwt(t, **one) for t in TARGETS}
    out["a4_weak"] = dwt(weak, knowledge={"weights": {"soft": 4.0}})
    linear = {"soft": {"kind": "linear", "start": 4.0, "end": 1.0}}
    out["linear_weak"] = dwt(weak, knowledge={"schedules": linear})
    out["remap_weak"] = dwt(weak, student={"init": "remap"}, **one)
    for name, eps in (("smooth_0.1", 0.1), ("smooth_matched", epsilon)):
        out[name] = {"knowledge": {"types": ["hard"], "label_smoothing": eps}}
    return out


def contrasts(weak: str) -> dict[str, dict[str, float]]:
    out = {f"a1_{t}_minus_standalone": {f"a1_{t}": 1.0, "standalone": -1.0} for t in TARGETS}
    return out | {
        "a4_minus_a1_weak": {"a4_weak": 1.0, f"a1_{weak}": -1.0},
        "linear_minus_a1_weak": {"linear_weak": 1.0, f"a1_{weak}": -1.0},
        "remap_minus_random_weak": {"remap_weak": 1.0, f"a1_{weak}": -1.0},
        "smooth_0.1_minus_standalone": {"smooth_0.1": 1.0, "standalone": -1.0},
        "smooth_matched_minus_standalone": {"smooth_matched": 1.0, "standalone": -1.0},
        **{f"a1_{t}_minus_{s}": {f"a1_{t}": 1.0, s: -1.0}
           for t in dict.fromkeys((weak, "gap20")) for s in ("smooth_matched", "smooth_0.1")},
    }  # fmt: skip


def val_at(result: Any, fraction: float) -> float:
    """The validation main metric of the evaluation nearest `fraction` of training."""
    rows = [r for r in result.history if "progress" in r]
    if not rows:
        return math.nan
    return float(min(rows, key=lambda r: abs(r["progress"] - fraction))["val_metric"])


def main() -> None:
    quiet_hf()
    p = parser(__doc__.splitlines()[0])
    p.add_argument(
        "--seeds", type=int, default=None, help="seeds of every arm (default 2, --quick 1)"
    )
    p.add_argument(
        "--weak", choices=sorted(TARGETS), default="gap2",
        help="the teacher of the α_s / schedule / remap arms (default gap2)",
    )  # fmt: skip
    p.add_argument("--work", help="keep the run folders here (default: a temporary folder)")
    args = p.parse_args()
    args.seeds = args.seeds or (1 if args.quick else 2)
    if args.seeds < 1:
        p.error("--seeds must be >= 1")
    t_start = time.perf_counter()
    st = settings(args.quick)
    raw = base_config(args, st)
    with work_folder(args.work, "kdray-weak-teacher-") as work:
        out = run_benchmark(args, st, raw, work)
    out["total_wall_s"] = time.perf_counter() - t_start
    print_arms(out, f"students: GLUE dev {out['metric']}, mean ± std over seeds, "
                    f"{st['steps']} steps, 2-layer student from random init")  # fmt: skip
    print_table(
        [{"arm": k, "val_at_25": m["val_at_25"], "val_at_50": m["val_at_50"], "dev": m["mean"]}
         for k, m in out["methods"].items()],
        ["arm", "val_at_25", "val_at_50", "dev"],
    )  # fmt: skip
    print(f"total {out['total_wall_s']:.0f} s")
    write_json(args.out, out)


def run_seeds(name: str, over: dict[str, Any], ctx: dict[str, Any], seeds: range) -> None:
    """Run (or read back) arm `name` for `seeds`, adding each to ctx['done'] and its row to
    the JSON (written after every run: a cut-short benchmark keeps what it measured)."""
    raw, work, dev, out = ctx["raw"], ctx["work"], ctx["dev"], ctx["out"]
    for seed in seeds:
        ctx["done"].setdefault(name, {})[seed] = done = run_arm(raw, name, over, seed, work, dev)
        if done.result.teacher_gap:
            out["gate"][name] = done.result.teacher_gap
        runs = ctx["done"][name]
        out["methods"][name] = method_row(runs, out["constant"]) | {
            "val_at_25": statistics.mean(val_at(d.result, 0.25) for d in runs.values()),
            "val_at_50": statistics.mean(val_at(d.result, 0.50) for d in runs.values()),
            "validation": statistics.mean(d.val for d in runs.values()),
        }
        write_json(ctx["path"], out)


def run_benchmark(args: Any, st: dict[str, Any], raw: dict[str, Any], work: Path) -> dict[str, Any]:
    # every arm's config, to check them all before any training: the teachers and the
    # matched ε here are placeholders (the ladder picks the teachers, the weak one sets ε)
    every = arms(st, dict.fromkeys(TARGETS, st["ladder"][0]), args.weak, 0.1)
    base, _, data = prepare(raw, every, work)
    spec = TASKS[base.data.task]
    dev = next(iter(data.test.values()))
    out: dict[str, Any] = {
        "benchmark": "weak_teacher",
        "metric": spec.main_metric,
        "dev_examples": len(dev),
        "constant": constant_score(spec, dev.labels),
        "teachers": {},
        "ladder": {},
        "methods": {},
        "gate": {},
        "config": {"base": raw, "quick": args.quick, "seeds": args.seeds, "weak": args.weak,
                   **st},
        "machine": machine(),
    }  # fmt: skip
    ctx = {"raw": raw, "work": work, "dev": dev, "out": out, "done": {}, "path": args.out}
    seeds = range(args.seeds)
    run_seeds("standalone", every["standalone"], ctx, seeds)
    alone = out["methods"]["standalone"]["validation"]
    print(f"stand-alone student: validation {alone:.4f}; the teacher ladder (1 layer):")
    for steps in st["ladder"]:
        cfg = TrialConfig.from_dict({**raw, "teacher": teacher_section(st, steps)})
        t_paths = resolve_teachers(cfg, progress=True)
        val = teacher_validation(cfg, t_paths, ["teacher"])["teacher"]
        out["ladder"][str(steps)] = {"validation": val, "gap": 100 * (alone - val)}
        print(f"  {steps} steps: validation {val:.4f} ({100 * (alone - val):+.1f} points below)")
    picked = {}
    for target, gap in TARGETS.items():
        steps = min(st["ladder"], key=lambda k: abs(out["ladder"][str(k)]["gap"] - gap))
        picked[target] = steps
        out["teachers"][target] = {"steps": steps, "target_gap": gap, **out["ladder"][str(steps)]}
    weak_cfg = TrialConfig.from_dict({**raw, "teacher": teacher_section(st, picked[args.weak])})
    out["smoothing"] = matched = matched_epsilon(resolve_teachers(weak_cfg)["teacher"],
                                                 data.train, base)  # fmt: skip
    print(
        f"the weak teacher's soft labels: mean entropy {matched['teacher_entropy']:.4f} nats "
        f"on the training rows; matched label smoothing ε = {matched['epsilon']:.4f}"
    )
    out["config"]["arms"] = every = arms(st, picked, args.weak, matched["epsilon"])
    out["config"]["contrasts"] = pairs = contrasts(args.weak)
    same: dict[str, str] = {}  # an arm whose config another arm has: its runs are reused
    for name, over in every.items():
        same[name] = next(k for k, v in every.items() if v == over)
    out["config"]["same_as"] = {k: v for k, v in same.items() if k != v}
    for seed in seeds:  # seed-major: a cut-short run still pairs every arm
        for name, over in every.items():
            if same[name] != name:
                ctx["done"].setdefault(name, {})[seed] = ctx["done"][same[name]][seed]
                out["methods"][name] = out["methods"][same[name]]
            elif name != "standalone":
                run_seeds(name, over, ctx, range(seed, seed + 1))
    out["paired"] = {k: paired_contrast(w, ctx["done"]) for k, w in pairs.items()}
    return out


if __name__ == "__main__":
    main()
