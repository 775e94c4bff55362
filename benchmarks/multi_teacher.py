"""Multi-teacher distillation: teacher policies on a pool of unequal teachers.

    python benchmarks/multi_teacher.py --data-dir ../shared/glue --out multi_teacher.json
    python benchmarks/multi_teacher.py --data-dir ../shared/glue --quick    # under 10 min
    python benchmarks/multi_teacher.py ... --seeds 3 --work runs/      # every arm 3 seeds
    python benchmarks/multi_teacher.py ... --arms single_T1 average rl_soft   # a subset

What it measures. SST-2 (max length 64), one data carving for every run, so every student trains on
the same examples and is scored on the same GLUE dev examples. A pool of four MiniLM teachers
fine-tuned by kdray (`kdray.training.fine_tune.resolve_teachers`, cached after the first run) of
deliberately unequal quality:

    T1  all 6 layers, the most steps and examples          (the strong teacher)
    T2  the first 3 layers only, same recipe as T1          (a weaker architecture)
    T3  all 6 layers, seed 1, fewer examples and steps      (a weaker recipe)
    T4  all 6 layers, 3 steps                               (near chance)

A teacher never trains on the students' validation or reward examples: its
max_train_examples is at least the students' data.max_train_examples, so its carving holds
theirs inside its own validation and reward splits (a teacher on fewer examples than the
students, e.g. 1000, would train on the students' validation split). Each teacher's main
metric is reported on the students' validation split and on dev.

One 2-layer `remap` student shape (from T1: every arm distils from the whole pool, so every
student starts from the same weights), knowledge hard + soft (τ = 2), selector `all`, the
same step budget; the arms differ only in teacher_policy:

    hard          hard labels only (no teacher read)
    single_Tk     teacher_policy single, teacher Tk (k = 1..4)
    average       equal weights (RL-KD's U-Ensemble)
    weighted      fixed weights ∝ teacher validation score (W-Ensemble)
    rand_single   one random teacher per mini-batch
    best_single   per example, the teacher with the lowest gold-label loss (an oracle)
    rl_soft       RL-KD, soft weights, reward r2
    rl_hard       RL-KD, hard (sampled) selections, reward r2
    rl_acks       rl_soft with selector acks choosing the hard/soft weights per phase

Seeds (trainer.seed; teacher_policy.seed follows it): 3 for rl_soft, average and the best
single-teacher arm (the single_Tk with the best validation score at seed 0), 1 for the
others; `--seeds N` gives every arm N (the three at least 3). Teacher outputs are computed
once for the pool and shared by every run.

Reported: per arm the mean ± std of the dev main metric over seeds and the mean wall time of
a run; the teachers' scores; the best constant prediction (majority class) and whether any
arm beats it; paired comparisons rl_soft − average and rl_soft − best single (the mean over
seeds of the per-seed dev differences, and a 95% interval resampling seeds and dev
examples (the Multi-Bootstrap: the same draws for both arms), with its verdict);
weight_auroc (rl_soft, last evaluation: AUROC of the per-example teacher weights against
"this teacher is right on this example", mean over seeds); near_chance_weight (rl_soft: T4's
mean weight over the final segment's learning phases, those after the policy's warm-up, mean
over seeds); and the per-step cost: rl_soft (4 cached teachers) and single_T1 (pool T1 alone, 1
cached teacher) step side by side in this process, in alternating blocks of 5 steps after 5
warm-up steps, each `Run.advance()` timed; ratio_rl_vs_single is the ratio of median step
times, ratio_rl_vs_single_total that of the summed times (phase starts and ends included).

Targets: ratio_rl_vs_single <= 1.15; near_chance_weight < 1/4 (the policy learns to give
the near-chance teacher less than an equal share).

Settings (full / --quick): students train on 8000 / 2000 train.tsv rows (minus validation
and reward), 600 / 80 steps of batch 32 / 16, learning rate 1e-4, phase length 25 / 10,
validation every 100 / 40 steps (--steps and --phase-length override); the same teachers in
both (and in search_spaces/multi_teacher.yaml): T1 and T2 400 steps on 20000 rows, T3 150
steps on 8000 rows, T4 3 steps on 8000 rows; 100 / 20 timed steps per timed run. --quick is
sized as 18 runs of about 20 s on 2 CPU cores (a student step of batch 16 takes ~0.2 s
there), under 10 minutes once the teachers are cached (the first --quick run fine-tunes its
four teachers first: ten minutes more). Run folders go to a
temporary folder, removed at the end, or to --work DIR (kept; running again with the same
DIR and settings continues unfinished runs and reuses finished ones).
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from arms import (
    Done,
    arm_config,
    correctness,
    finite_mean,
    json_float,
    method_row,
    paired,
    print_arms,
    work_folder,
)
from bench_common import machine, parser, print_table, quiet_hf, write_json
from transformers import AutoTokenizer

from kdray.base.io import cache_root
from kdray.base.results import RunResult, read_phase_log
from kdray.config import TrialConfig
from kdray.data.dataset import TaskData, load_task
from kdray.data.metrics import constant_score
from kdray.data.tasks import TASKS
from kdray.models.classifier import load_classifier
from kdray.models.device import pick_device
from kdray.training.build import setup, shared_teacher_outputs
from kdray.training.checks import check_trial
from kdray.training.fine_tune import resolve_teachers
from kdray.training.loop import evaluate
from kdray.training.trainer import Run, distil

TEACHERS = ["T1", "T2", "T3", "T4"]
NEAR_CHANCE = "T4"
#: Arm name -> config sections merged over the base (every arm distils from the whole pool).
ARMS: dict[str, dict[str, Any]] = {
    "hard": {"knowledge": {"types": ["hard"]}},
    **{f"single_{t}": {"teacher_policy": {"kind": "single", "teacher": t}} for t in TEACHERS},
    "average": {"teacher_policy": {"kind": "average"}},
    "weighted": {"teacher_policy": {"kind": "weighted"}},
    "rand_single": {"teacher_policy": {"kind": "rand_single"}},
    "best_single": {"teacher_policy": {"kind": "best_single"}},
    "rl_soft": {"teacher_policy": {"kind": "rl", "weights": "soft", "reward": "r2"}},
    "rl_hard": {"teacher_policy": {"kind": "rl", "weights": "hard", "reward": "r2"}},
    "rl_acks": {"teacher_policy": {"kind": "rl", "weights": "soft", "reward": "r2"},
                "selector": {"kind": "acks"}},
}  # fmt: skip
#: The timing pair: rl over the pool against one teacher alone.
TIMED = {
    "rl": ARMS["rl_soft"],
    "single": {"pool": "T1", "teacher_policy": {"kind": "single", "teacher": "T1"}},
}
MIN_KEY_SEEDS = 3
BLOCK = 5  # timed steps per block; the two runs alternate blocks, first one then the other
TIMING_WARMUP = 5


def settings(quick: bool, steps: int | None) -> dict[str, Any]:
    """The sizes of one benchmark run (full or --quick). The teachers are the same in both
    (and in search_spaces/multi_teacher.yaml), so they are fine-tuned once for all three."""
    teachers = {"t12_steps": 400, "t12_examples": 20000, "t34_examples": 8000, "t3_steps": 150}
    if quick:  # 18 runs of ~20 s on 2 CPU cores (a step of batch 16 takes ~0.2 s there)
        return {"examples": 2000, "steps": steps or 80, "batch_size": 16, "eval_every": 40,
                "phase_length": 10, "timed_steps": 20, **teachers}  # fmt: skip
    return {"examples": 8000, "steps": steps or 600, "batch_size": 32, "eval_every": 100,
            "phase_length": 25, "timed_steps": 100, **teachers}  # fmt: skip


def base_config(args: Any, st: dict[str, Any]) -> dict[str, Any]:
    """The config every arm starts from (plain data, as written to the JSON)."""
    common = {"backbone": "minilm", "batch_size": 32, "learning_rate": 5e-5}
    teachers = [
        {"name": "T1", **common, "num_layers": None, "max_steps": st["t12_steps"],
         "max_train_examples": st["t12_examples"], "seed": 0},
        {"name": "T2", **common, "num_layers": 3, "max_steps": st["t12_steps"],
         "max_train_examples": st["t12_examples"], "seed": 0},
        {"name": "T3", **common, "num_layers": None, "max_steps": st["t3_steps"],
         "max_train_examples": st["t34_examples"], "seed": 1},
        {"name": "T4", **common, "num_layers": None, "max_steps": 3,
         "max_train_examples": st["t34_examples"], "seed": 0},
    ]  # fmt: skip
    leaky = [t["name"] for t in teachers if t["max_train_examples"] < st["examples"]]
    assert not leaky, f"teachers {leaky} would train on the students' validation split"
    return {
        "data": {"task": "sst2", "data_dir": args.data_dir, "max_length": 64,
                 "max_train_examples": st["examples"]},
        "teachers": teachers,
        "student": {"num_layers": 2, "init": "remap"},
        "knowledge": {"types": ["hard", "soft"], "temperature": 2.0},
        "selector": {"kind": "all", "phase_length": st["phase_length"]},
        "trainer": {"max_steps": st["steps"], "batch_size": st["batch_size"], "learning_rate": 1e-4,
                    "eval_every": st["eval_every"], "seed": 0},
        "cache_dir": args.cache_dir,
    }  # fmt: skip


# ---------------------------------------------------------------------------------- scores


def score_teachers(
    paths: dict[str, str], data: TaskData, cfg: TrialConfig
) -> dict[str, dict[str, float]]:
    """Each teacher's main metric on the students' validation split and on dev."""
    spec, tr, device = TASKS[cfg.data.task], cfg.trainer, pick_device(cfg.trainer.device)
    dev = next(iter(data.test.values()))
    out = {}
    for name, path in paths.items():
        model = load_classifier(path).to(device)
        out[name] = {}
        for split, part in (("validation", data.validation), ("dev", dev)):
            metrics = evaluate(model, part, spec, device, tr.eval_batch_size, tr.bf16)
            out[name][split] = metrics[spec.main_metric]
    return out


def near_chance_weight(result: RunResult) -> float:
    """T4's mean weight over the final segment's learning phases (those the policy updated
    after: a finite tp_reward; the warm-up's have none) from the phase log's tw_T4, else over
    the history's evaluations; NaN when neither records it."""
    try:
        log = read_phase_log(result.output_dir)
    except FileNotFoundError:
        log = None
    col = f"tw_{NEAR_CHANCE}"
    if log is not None and col in log.columns:
        final = log[log["final"]]
        values = final[final["tp_reward"].notna()][col].dropna()
        if len(values):
            return float(values.mean())
    key = f"teacher/weight_{NEAR_CHANCE}"
    hist = [r[key] for r in result.history if key in r and math.isfinite(r[key])]
    return statistics.mean(hist) if hist else math.nan


def last_auroc(result: RunResult) -> float:
    """The AUROC of the teacher weights at the run's last evaluation (NaN: not recorded)."""
    last = result.history[-1] if result.history else {}
    return float(last.get("teacher/weight_auroc", math.nan))


# ---------------------------------------------------------------------------------- timing


def step_times(
    cfgs: dict[str, TrialConfig], paths: dict[str, str], shared: Any, n: int
) -> dict[str, list[float]]:
    """Seconds of each of `n` `Run.advance()` calls per config, the runs stepping side by
    side in alternating blocks of BLOCK steps (A B, B A, ...) after TIMING_WARMUP steps."""
    runs = {name: Run(setup(cfg, paths, teacher_outputs=shared), None, False)
            for name, cfg in cfgs.items()}  # fmt: skip
    for run in runs.values():
        run.s.student.train()
        for _ in range(TIMING_WARMUP):
            run.advance()
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for b in range(math.ceil(n / BLOCK)):
        for name in names if b % 2 == 0 else names[::-1]:
            run = runs[name]
            for _ in range(min(BLOCK, n - b * BLOCK)):
                t0 = time.perf_counter()
                run.advance()  # phases start and end when due, like a real run
                if run.s.device.type == "cuda":
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - t0)
    return times


# ------------------------------------------------------------------------------------ main


def main() -> None:
    quiet_hf()
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=1,
                   help=f"seeds of every arm (rl_soft, average and the best single-teacher "
                        f"arm get at least {MIN_KEY_SEEDS})")  # fmt: skip
    p.add_argument("--steps", type=int, default=None, help="student steps per run")
    p.add_argument("--phase-length", type=int, default=None,
                   help="student steps per phase (default: 25, --quick 10)")  # fmt: skip
    p.add_argument("--work", help="keep the run folders here (default: a temporary folder)")
    p.add_argument("--arms", nargs="+", choices=list(ARMS), metavar="ARM", default=list(ARMS),
                   help="run only these arms (default: all; the paired comparisons need "
                        "rl_soft, average and a single_* arm, the best of those run)")  # fmt: skip
    args = p.parse_args()
    if args.seeds < 1:
        p.error("--seeds must be >= 1")
    if not {"rl_soft", "average"} <= set(args.arms) or not any(
        a.startswith("single_") for a in args.arms
    ):
        p.error("--arms must include rl_soft, average and at least one single_* arm")
    t_start = time.perf_counter()
    st = settings(args.quick, args.steps)
    st["phase_length"] = args.phase_length or st["phase_length"]
    raw = base_config(args, st)
    base = TrialConfig.from_dict(raw)
    with work_folder(args.work, "kdray-multi-teacher-") as work:
        out = run_benchmark(args, st, raw, base, work)
    out["total_wall_s"] = time.perf_counter() - t_start
    summarize(out, args.out)


def run_benchmark(
    args: Any, st: dict[str, Any], raw: dict[str, Any], base: TrialConfig, work: Path
) -> dict[str, Any]:
    """Teachers, every arm and seed, the paired comparisons and the timing, as the JSON."""
    for name, over in {**ARMS, **{f"timed_{k}": v for k, v in TIMED.items()}}.items():
        check_trial(arm_config(raw, over, {"output_dir": str(work / name)}))  # before any work
    t0 = time.perf_counter()
    paths = resolve_teachers(base, progress=True)
    shared = shared_teacher_outputs(base, paths, progress=True)
    tokenizer = AutoTokenizer.from_pretrained(paths[TEACHERS[0]])
    data = load_task(base.data, tokenizer, cache_root(base))
    spec = TASKS[base.data.task]
    dev = next(iter(data.test.values()))
    teachers = score_teachers(paths, data, base)
    constant = constant_score(spec, dev.labels)
    print(f"teachers ready in {time.perf_counter() - t0:.0f} s; dev {spec.main_metric}: "
          + ", ".join(f"{k} {v['dev']:.4f}" for k, v in teachers.items())
          + f"; constant prediction {constant:.4f}")  # fmt: skip
    out: dict[str, Any] = {
        "benchmark": "multi_teacher",
        "metric": spec.main_metric,
        "dev_examples": len(dev),
        "constant": constant,
        "teachers": teachers,
        "methods": {},
        "config": {"base": raw, "arms": ARMS, "timed": TIMED, "quick": args.quick,
                   "student_steps": st["steps"], "seeds": args.seeds,
                   "key_seeds": max(MIN_KEY_SEEDS, args.seeds),
                   "timed_steps": st["timed_steps"], "timing_block": BLOCK,
                   "timing_warmup": TIMING_WARMUP},
        "machine": machine(),
    }  # fmt: skip
    arms = [a for a in ARMS if a in args.arms]
    out["config"]["arms_run"] = arms
    done: dict[str, dict[int, Done]] = {a: {} for a in arms}

    def run(name: str, seed: int) -> None:
        keep = name in ("rl_soft", "average") or name.startswith("single_")
        folder = str(work / f"{name}-s{seed}")
        cfg = arm_config(raw, ARMS[name], {"seed": seed, "save_student": keep,
                                           "output_dir": folder})  # fmt: skip
        result = distil(cfg, teacher_outputs=shared, teacher_paths=paths)
        if result.status != "finished":
            raise SystemExit(f"{name} seed {seed}: run {result.status} at step {result.steps}")
        d = done[name][seed] = Done(result, cfg, result.validation.get(spec.main_metric, math.nan))
        if keep:
            assert result.student_dir is not None
            d.right = correctness(load_classifier(result.student_dir), dev, cfg)
            if abs(d.right.mean() - result.test_score) > 1e-6:
                print(f"  warning: {name} seed {seed}: predict gives dev accuracy "
                      f"{d.right.mean():.4f}, the run {result.test_score:.4f}")  # fmt: skip
        print(f"  {name} seed {seed}: dev {result.test_score:.4f}, validation {d.val:.4f} "
              f"({result.wall_s:.0f} s)")  # fmt: skip
        out["methods"][name] = method_row(done[name], constant)
        write_json(args.out, out)  # partial results survive an interruption

    for name in arms:
        run(name, 0)
    singles = [a for a in arms if a.startswith("single_")]
    best = max(singles, key=lambda a: (done[a][0].val, teachers[a[len("single_") :]]["validation"]))
    out["best_single_teacher"] = best
    print(f"best single-teacher arm (validation at seed 0): {best}")
    key = ("rl_soft", "average", best)
    for name in arms:
        for seed in range(1, max(MIN_KEY_SEEDS, args.seeds) if name in key else args.seeds):
            run(name, seed)

    out["paired"] = {
        "rl_minus_average": paired("rl_soft", "average", done),
        "rl_minus_best_single": paired("rl_soft", best, done),
    }
    rl = list(done["rl_soft"].values())
    out["weight_auroc"] = json_float(finite_mean([last_auroc(d.result) for d in rl]))
    out["near_chance_weight"] = json_float(finite_mean([near_chance_weight(d.result) for d in rl]))
    out["n_teachers"] = len(TEACHERS)

    n = st["timed_steps"]
    timed = {k: arm_config(raw, over, {"max_steps": TIMING_WARMUP + n + st["phase_length"],
                                       "eval_every": 10**6, "save_student": False,
                                       "output_dir": str(work / f"timed_{k}")})
             for k, over in TIMED.items()}  # fmt: skip
    times = step_times(timed, paths, shared, n)
    med = {k: statistics.median(v) for k, v in times.items()}
    total = {k: sum(v) for k, v in times.items()}
    out["step_time_s"] = med
    out["step_time_total_s"] = total
    out["ratio_rl_vs_single"] = med["rl"] / med["single"]
    out["ratio_rl_vs_single_total"] = total["rl"] / total["single"]
    return out


def summarize(out: dict[str, Any], path: str | None) -> None:
    """The tables and the targets; writes the JSON."""
    metric = out["metric"]
    print(f"\nteachers: {metric} on the students' validation split and on GLUE dev "
          f"({out['dev_examples']} examples)")  # fmt: skip
    print_table(
        [{"teacher": k, "validation": v["validation"], "dev": v["dev"]}
         for k, v in out["teachers"].items()],
        ["teacher", "validation", "dev"],
    )  # fmt: skip
    title = (
        f"students: GLUE dev {metric}, mean ± std over seeds, "
        f"{out['config']['student_steps']} steps"
    )
    print_arms(out, title, {out["best_single_teacher"]: "(best single)"})

    def show(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    med, n = out["step_time_s"], out["n_teachers"]
    print(f"\nweight_auroc (rl_soft, last evaluation) = {show(out['weight_auroc'])}")
    print(f"near_chance_weight ({NEAR_CHANCE}, rl_soft, learning phases) = "
          f"{show(out['near_chance_weight'])} (equal share {1 / n:.4f})")  # fmt: skip
    print(f"median step: rl (pool of {n}) {1000 * med['rl']:.1f} ms, single (pool T1) "
          f"{1000 * med['single']:.1f} ms; ratio_rl_vs_single = {out['ratio_rl_vs_single']:.3f}"
          f" (total incl. phase work {out['ratio_rl_vs_single_total']:.3f})")  # fmt: skip
    ncw = out["near_chance_weight"]
    targets = {
        "ratio_rl_vs_single <= 1.15": out["ratio_rl_vs_single"] <= 1.15,
        f"near_chance_weight < 1/{n}": ncw is not None and ncw < 1 / n,
    }
    out["targets"] = targets
    print("targets: " + ", ".join(f"{k} {'PASS' if v else 'FAIL'}" for k, v in targets.items()))
    print(f"total {out['total_wall_s']:.0f} s")
    write_json(path, out)


if __name__ == "__main__":
    main()
