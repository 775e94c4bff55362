"""Per-step cost of distillation and of ACKS, on the same batches, side by side.

    python benchmarks/overhead.py --data-dir ../shared/glue --out overhead.json [--quick]

Four runs step in lockstep over identical batches (SST-2, 2-layer `remap` student of the MiniLM
teacher): (a) plain fine-tuning, hard labels only; (b) hard+soft+hidden+relation with live
teacher forwards; (c) the same with the teacher cache; (d) the same as (c) with the `acks`
selector (online, soft, default phase length), whose reward-split loss, [CLS] state and agent
update happen once per phase. Every variant takes each step before any takes the next, in a
freshly shuffled order at every step (seeded), so machine noise hits all alike. ratio_live =
b/a, ratio_cached = c/a and ratio_acks_vs_all = d/c compare total time over the same timed
steps (whole phases: the per-phase work is part of the cost), each with its paired 95%
bootstrap interval over steps (`ci95`), so run-to-run drift of the machine cancels;
`median_ratios` are the older median-step ratios. Each non-hard type also runs alone beside
hard labels with the cache (`per_type`: its total time over fine-tuning's), so a user sees what
each type costs. Targets: ratio_cached <= 1.05, ratio_acks_vs_all <= 1.02. With --profile,
torch.profiler then records --profile-steps steps of fine-tuning and of the cached distillation
and prints (and saves) the operators with the most self CPU time of each. --group-by-length
batches every variant by length (trainer.group_by_length). Teacher weights do not change step
time, so the teacher is the backbone with a fresh head unless --teacher names a fine-tuned one.
"""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

import numpy as np
import torch
from bench_common import machine, parser, print_table, quiet_hf, write_json

from kdray.config import TrialConfig
from kdray.models.source import resolve_backbone
from kdray.training.trainer import Run, setup

DISTIL = ["hard", "soft", "hidden", "relation"]


def main() -> None:
    quiet_hf()
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--teacher", default="minilm", help="teacher checkpoint (default: backbone)")
    p.add_argument("--phases", type=int, default=None, help="timed phases (of 50 steps)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--group-by-length",
        action="store_true",
        help="every variant batches by length (trainer.group_by_length)",
    )
    p.add_argument("--profile", action="store_true", help="print torch.profiler's top operators")
    p.add_argument("--profile-steps", type=int, default=20)
    args = p.parse_args()
    phase = 50
    warmup = phase  # one whole phase: lazy set-up (ACKS networks) and allocator warm-up
    steps = phase * (args.phases or (1 if args.quick else 3))
    base = {
        "data": {"task": "sst2", "data_dir": args.data_dir, "max_length": 64,
                 "max_train_examples": 2000 if args.quick else 8000},
        "teacher": {"path": resolve_backbone(args.teacher)},
        "student": {"num_layers": 2, "init": "remap"},
        "selector": {"phase_length": phase},
        "trainer": {"max_steps": warmup + steps, "batch_size": args.batch_size,
                    "eval_every": 10**6, "save_student": False,
                    **({"group_by_length": True} if args.group_by_length else {})},
        "cache_dir": args.cache_dir,
    }  # fmt: skip
    variants = {
        "a_finetune": {"knowledge": {"types": ["hard"]}},
        "b_live": {"knowledge": {"types": DISTIL}, "trainer": {"teacher_cache": False}},
        "c_cached": {"knowledge": {"types": DISTIL}, "trainer": {"teacher_cache": True}},
        "d_acks": {"knowledge": {"types": DISTIL}, "selector": {"kind": "acks"}},
        **{f"e_{k}": {"knowledge": {"types": ["hard", k]}, "trainer": {"teacher_cache": True}}
           for k in DISTIL[1:]},
    }  # fmt: skip
    runs = {}
    for name, over in variants.items():
        raw = {k: {**base.get(k, {}), **v} if isinstance(v, dict) else v for k, v in over.items()}
        raw = {**base, **raw}
        t0 = time.perf_counter()
        runs[name] = Run(setup(TrialConfig.from_dict(raw)), None, progress=False)
        cfg = runs[name].cfg
        print(f"{name}: knowledge {'+'.join(cfg.knowledge.types)}, selector {cfg.selector.kind}, "
              f"teacher outputs {runs[name].s.cache_mode} (set up in "
              f"{time.perf_counter() - t0:.1f} s)")  # fmt: skip
    times: dict[str, list[float]] = {n: [] for n in runs}
    for run in runs.values():
        run.s.student.train()
    order = list(runs)
    shuffle = random.Random(0).shuffle
    for step in range(warmup + steps):
        shuffle(order)  # no variant always runs right after the same one (caches, clocks)
        for name in order:
            run = runs[name]
            t0 = time.perf_counter()
            run.advance()  # starts and ends phases when due, like a real run
            if run.s.device.type == "cuda":
                torch.cuda.synchronize()
            if step >= warmup:
                times[name].append(time.perf_counter() - t0)
    med = {n: statistics.median(t) for n, t in times.items()}
    mean = {n: statistics.mean(t) for n, t in times.items()}
    paired = {n: ratio_ci(times[n], times["a_finetune"]) for n in runs}
    rows = [
        {"variant": n, "median_step_ms": 1000 * med[n], "mean_step_ms": 1000 * mean[n],
         "median_vs_finetune": med[n] / med["a_finetune"],
         "total_vs_finetune": paired[n]["ratio"],
         "ci95": "[{:.3f}, {:.3f}]".format(*paired[n]["ci95"])}
        for n in runs
    ]  # fmt: skip
    print_table(rows, list(rows[0]))
    acks = ratio_ci(times["d_acks"], times["c_cached"])
    result = {
        "benchmark": "overhead",
        "timed_steps": steps,
        "phase_length": phase,
        "batch_size": args.batch_size,
        "group_by_length": args.group_by_length,
        "median_step_s": med,
        "mean_step_s": mean,
        "ratio_live": paired["b_live"]["ratio"],
        "ratio_cached": paired["c_cached"]["ratio"],
        "ratio_acks_vs_all": acks["ratio"],
        "ci95": {
            "ratio_live": paired["b_live"]["ci95"],
            "ratio_cached": paired["c_cached"]["ci95"],
            "ratio_acks_vs_all": acks["ci95"],
            **{f"per_type.{k}": paired[f"e_{k}"]["ci95"] for k in DISTIL[1:]},
        },
        "per_type": {k: paired[f"e_{k}"]["ratio"] for k in DISTIL[1:]},
        "median_ratios": {n: med[n] / med["a_finetune"] for n in runs},
        "targets": {"ratio_cached": 1.05, "ratio_acks_vs_all": 1.02},
        "machine": machine(),
    }
    ci = {k: "[{:.3f}, {:.3f}]".format(*v) for k, v in result["ci95"].items()}
    print(f"ratio_live = {result['ratio_live']:.3f} {ci['ratio_live']}   ratio_cached = "
          f"{result['ratio_cached']:.3f} {ci['ratio_cached']} (target <= 1.05)   "
          f"ratio_acks_vs_all = {result['ratio_acks_vs_all']:.3f} {ci['ratio_acks_vs_all']} "
          f"(target <= 1.02)")  # fmt: skip
    print("per type (hard + it, cached, over fine-tuning): "
          + "  ".join(f"{k} {v:.3f}" for k, v in result["per_type"].items()))  # fmt: skip
    if args.profile:
        result["profile"] = {n: profile(n, runs[n], args.profile_steps)
                             for n in ("a_finetune", "c_cached")}  # fmt: skip
    write_json(args.out, result)


def ratio_ci(num: list[float], den: list[float], n_boot: int = 4000) -> dict[str, Any]:
    """Σ num / Σ den over the same steps (the variants' total time on identical batches) and
    its paired 95% bootstrap interval: each resample draws steps with replacement, the same
    steps for both, so what a step's batch and the machine's state at that moment cost both
    cancels."""
    x, y = np.asarray(num), np.asarray(den)
    idx = np.random.default_rng(0).integers(0, len(x), size=(n_boot, len(x)))
    ratios = x[idx].sum(1) / y[idx].sum(1)
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return {"ratio": float(x.sum() / y.sum()), "ci95": (float(lo), float(hi))}


def profile(name: str, run: Run, steps: int, top: int = 15) -> list[dict[str, object]]:
    """torch.profiler over `steps` steps of `run`: the operators with the most self CPU time,
    printed and returned as rows (name, calls, self CPU ms per step, share of the total)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as record

    with record(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            run.advance()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    rows: list[dict[str, object]] = [
        {"operator": e.key, "calls_per_step": e.count / steps,
         "self_ms_per_step": e.self_cpu_time_total / 1000 / steps,
         "share": e.self_cpu_time_total / total}
        for e in events[:top]
    ]  # fmt: skip
    print(f"\n{name}: top operators by self CPU time ({steps} steps, "
          f"{total / 1000 / steps:.1f} ms per step in all)")  # fmt: skip
    print_table(rows, ["operator", "calls_per_step", "self_ms_per_step", "share"])
    return rows


if __name__ == "__main__":
    main()
