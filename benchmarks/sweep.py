"""The sweep service on local Ray: slot efficiency and where the rest goes, teacher sharing,
ASHA against FIFO, and what the first rung does to learning selectors.

    python benchmarks/sweep.py --out sweep.json            # full (about 25 min on 2 CPUs)
    python benchmarks/sweep.py --quick --out sweep.json    # about 10 min

All runs use one local Ray with `--slots` CPUs (one per trial), kdray.sweep's own trainable
(`train_trial`, checkpoints to Tune, phase logs) and the quickstart's SST-2 setting: MiniLM
teacher (200 steps at 1e-4, grouped batches; cached after the first run), 2-layer `remap`
student, knowledge hard+soft+hidden+relation, batches grouped by length, 10 evaluation rounds
per trial on a fixed validation split of a tenth of the examples (--quick: 50 steps, 3000
examples; full: 100 steps, 6000). Trials run as the sweep runs them: Tune's reuse_actors on.

    efficiency               8 trials (selector all, seeds 0-7), teacher outputs shared:
                             Σ trial busy time (Tune's time_total_s) / (wall × slots); >= 0.95.
                             `breakdown` splits wall × slots into: in the trial function
                             (kdray's trainable), worker start (fit start to each slot's first
                             trial) and between functions (Tune switching trials on a worker,
                             fetching the shared parameters, the idle tail; of it
                             switching_on_a_worker: the gaps between one trial's function and
                             the next on the same worker process); busy (Tune's
                             clock) is in_function plus busy_outside_function (time Tune
                             counts outside the function, e.g. tune.with_parameters' fetch),
                             of which busy_in_tune_report is inside tune.report (checkpoint
                             hand-over and persisting; tune_report_share: its share of slot
                             time, <= 0.01); plus the CPU seconds of the driver and of Ray's
                             daemons during the run
    teacher_sharing_speedup  the same 8 trials, each computing its own teacher outputs (and data)
                             in a fresh cache, against the shared run: wall ratio
    per benchmark seed (--seeds): 12 configs (learning rate, temperature; selectors none,
    vanilla, all, acks three times each) under FIFO, ASHA (grace 1, --reduction-factor) and
    ASHA with `selector_grace: {acks: 3}` (kdray.search.tune_schedulers):
    asha_compute_fraction    student steps ASHA used / FIFO's (<= 0.35)
    asha_metric_gap          the final validation metric of the trial kdray picks (its
                             leaderboard's first: finished trials first, then by the final
                             metric) under FIFO minus under ASHA, in points (<= 0.3); also
                             asha_test_gap (the picked trial's GLUE dev score, held out from
                             the selection), asha_metric_gap_any_round (best validation at any
                             round, the noisier reading of earlier releases) and same_pick
    ci95_over_seeds          Student-t 95% interval of each mean over the benchmark seeds
                             (compute fractions, gaps, dev gaps; two seeds or more)
    pruning_bias             from FIFO: per selector, mean rank (1 = best) at the first rung
                             and at the end, and the share of its trials the first rung would
                             stop (below the top 1/rf) against the share below it at the end;
                             Spearman(learning rate, metric) at the first rung and at the end
                             (the early-ranking inversion: low rates lead early)
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
from bench_common import machine, parser, print_table, quiet_hf, write_json

from kdray.search.schedulers import create_scheduler
from kdray.search.spec import SweepSpec
from kdray.search.sweep_file import parse_sweep
from kdray.search.tune_schedulers import SelectorGraceASHA
from kdray.search.tuner import prepare_teachers, run_config, train_trial, tune_config

TYPES = ["hard", "soft", "hidden", "relation"]
SELECTORS = ["none", "vanilla", "all", "acks"]
ROUNDS = 10
GRACE = {"acks": 3}
#: Ray's own processes (not trials): their CPU time competes with the trials on a small machine.
DAEMONS = ("gcs_server", "raylet", "dashboard", "log_monitor", "monitor.py", "runtime_env")


def base_spec(args: Any, steps: int, examples: int, scheduler: str,
              grace: dict[str, int] | None = None) -> SweepSpec:  # fmt: skip
    return parse_sweep(
        {
            "name": "bench",
            "trial": {
                "data": {"task": "sst2", "data_dir": args.data_dir, "max_length": 64,
                         "max_train_examples": examples, "validation_fraction": 0.1,
                         "max_test_examples": None},  # the picked trial's held-out score
                "teacher": {"backbone": "minilm", "max_steps": 200, "learning_rate": 1.0e-4,
                            "max_train_examples": 20000, "group_by_length": True},
                "student": {"num_layers": 2, "init": "remap"},
                "knowledge": {"types": TYPES},
                "selector": {"kind": "all", "phase_length": 10, "reward_examples": 128},
                "trainer": {"max_steps": steps, "batch_size": 32, "eval_every": steps // ROUNDS,
                            "group_by_length": True, "save_student": False},
                "cache_dir": args.cache_dir,
            },
            "sweep": {"scheduler": scheduler, "searcher": "random", "num_samples": 1,
                      "scheduler_options": {"grace_period": 1,
                                            "reduction_factor": args.reduction_factor}
                      if scheduler == "asha" else {},
                      "selector_grace": grace or {}},
        },
        "bench",
    ).absolute()  # fmt: skip


class SampleGrace(SelectorGraceASHA):
    """selector_grace for this script's trials, whose config is {"sample": {path: value}}."""

    def trial_grace(self, trial: Any) -> int:
        kind = trial.config["sample"].get("selector.kind", self.base_kind)
        return self.grace.get(kind, 0)


def unpack(config: dict[str, Any], timing_dir: str, **kwargs: Any) -> None:
    """Tune's trainable for a fixed list of configs: {"sample": {path: value}} -> one trial;
    when it entered and left the trainable go to `timing_dir` (also when ASHA stops it)."""
    from ray import tune

    t_in = time.time()
    # one file per call (a reused worker's context may already name its next trial at the end)
    name = f"{tune.get_context().get_trial_id()}-{uuid.uuid4().hex[:8]}.json"
    try:
        train_trial(config["sample"], **kwargs)
    finally:
        Path(timing_dir, name).write_text(json.dumps([t_in, time.time(), os.getpid()]))


def daemon_cpu_s() -> float:
    """CPU seconds (user + system) Ray's daemons have used so far (Linux /proc)."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().decode(errors="replace")
            if not any(d in cmd for d in DAEMONS):
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except OSError:  # gone meanwhile
            continue
    return total


def run(spec: SweepSpec, samples: list[dict[str, Any]], storage: str, name: str,
        teachers: dict[str, str] | None, shared: Any, slots: int) -> dict[str, Any]:  # fmt: skip
    """One Tune run over exactly `samples`: wall, busy time and where the rest went, and each
    trial's validation curve."""
    from ray import tune

    timing = Path(storage) / f"timing-{name}"
    timing.mkdir()
    trainable = tune.with_resources(
        tune.with_parameters(unpack, timing_dir=str(timing), spec=spec, teacher_paths=teachers,
                             shared=shared),
        {"cpu": 1},
    )  # fmt: skip
    scheduler = None
    if spec.sweep.selector_grace:
        s = spec.sweep
        scheduler = SampleGrace(s.selector_grace, "all", time_attr="training_iteration",
                                max_t=spec.evaluation_rounds(), **s.scheduler_options)  # fmt: skip
    tuner = tune.Tuner(
        trainable,
        param_space={"sample": tune.grid_search(samples)},
        tune_config=tune_config(spec, None, scheduler or create_scheduler(spec)),
        run_config=run_config(
            spec, name, storage, verbose=0, failure_config=tune.FailureConfig(max_failures=0)
        ),
    )
    cpu0, daemons0, t0 = os.times(), daemon_cpu_s(), time.time()
    grid = tuner.fit()
    t1, cpu1, daemons1 = time.time(), os.times(), daemon_cpu_s()
    errors = [str(r.error) for r in grid if r.error]
    if errors:
        raise SystemExit(f"{name}: {len(errors)} trials failed: {errors[0][:500]}")
    dfs = [r.metrics_dataframe for r in grid]
    spans = sorted(json.loads(p.read_text()) for p in timing.glob("*.json"))
    if len(spans) != len(dfs):  # the breakdown would count a missing trial as idle
        print(f"warning: {name}: {len(spans)} timing records for {len(dfs)} trials")
    wall = t1 - t0
    busy = sum(float(df["time_total_s"].iloc[-1]) for df in dfs)
    inside = sum(end - start for start, end, _ in spans)
    worker_start = sum(start - t0 for start, _, _ in spans[:slots])
    # on each worker process: the gaps between one trial's function and the next one's
    by_worker: dict[int, list[tuple[float, float]]] = {}
    for start, end, pid in spans:
        by_worker.setdefault(pid, []).append((start, end))
    switches = [b[0] - a[1] for runs in by_worker.values() for a, b in itertools.pairwise(runs)]
    curves = [
        {"config": r.config["sample"], "val": [float(v) for v in df["val_metric"]],
         "steps": int(df["step"].iloc[-1]),
         "test": float(df["test_metric"].iloc[-1]) if "test_metric" in df else None}
        for r, df in zip(grid, dfs, strict=True)
    ]  # fmt: skip
    picked = pick(curves, spec.base_trial().trainer.max_steps)
    # the finished trials' students (a trial's training states go when it ends)
    shutil.rmtree(Path(storage) / name, ignore_errors=True)
    return {
        "wall_s": wall,
        "busy_s": busy,
        "steps": sum(c["steps"] for c in curves),
        "best_val": picked["val"][-1],  # the final metric of the trial kdray picks
        "best_test": picked["test"],  # its held-out (GLUE dev) score
        "best_config": picked["config"],
        "best_val_any_round": max(max(c["val"]) for c in curves),
        "trials": len(dfs),
        "timing_records": len(spans),
        "workers": len(by_worker),
        "switch_s": switches,
        "breakdown_slot_s": {
            "total": wall * slots,
            "busy": busy,
            "busy_in_tune_report": sum(float(df["time_report_s"].iloc[-1]) for df in dfs),
            "busy_outside_function": busy - inside,
            "in_function": inside,
            "worker_start": worker_start,
            "between_functions": wall * slots - inside - worker_start,
            "switching_on_a_worker": sum(switches),  # part of between_functions
            "driver_cpu": (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system),
            "ray_daemons_cpu": daemons1 - daemons0,
        },
        "curves": curves,
    }


def points(a: float | None, b: float | None) -> float:
    """a - b in points (NaN when either is missing, e.g. no held-out score)."""
    return math.nan if a is None or b is None else 100 * (a - b)


def seed_interval(values: list[float]) -> list[float] | None:
    """Student-t 95% interval of the mean over benchmark seeds (None below two seeds)."""
    from scipy import stats

    x = [v for v in values if not math.isnan(v)]
    if len(x) < 2:
        return None
    m, half = statistics.mean(x), stats.t.ppf(0.975, len(x) - 1) * statistics.stdev(x)
    return [float(m - half / math.sqrt(len(x))), float(m + half / math.sqrt(len(x)))]


def pick(curves: list[dict[str, Any]], max_steps: int) -> dict[str, Any]:
    """The trial kdray's leaderboard puts first (`kdray.analysis.leaderboard`): finished
    trials first, then by the final validation metric."""
    return max(curves, key=lambda c: (c["steps"] >= max_steps, c["val"][-1]))


def pruning_bias(fifo: dict[str, Any], rf: int) -> dict[str, Any]:
    """What ASHA's first rung would decide about each selector's trials, against FIFO's end."""
    df = pd.DataFrame(
        {"selector": c["config"]["selector.kind"], "lr": c["config"]["trainer.learning_rate"],
         "first": c["val"][0], "final": c["val"][-1]}
        for c in fifo["curves"]
    )  # fmt: skip
    n = len(df)
    keep = max(1, n // rf)  # the top 1/rf pass a rung
    for col in ("first", "final"):
        df[f"rank_{col}"] = df[col].rank(ascending=False, method="average")
        df[f"cut_{col}"] = df[f"rank_{col}"] > keep
    per = df.groupby("selector").agg(
        trials=("lr", "size"), mean_rank_first_rung=("rank_first", "mean"),
        mean_rank_final=("rank_final", "mean"), share_cut_at_first_rung=("cut_first", "mean"),
        share_below_cut_at_end=("cut_final", "mean"),
    )  # fmt: skip
    return {
        "per_selector": json.loads(per.reset_index().to_json(orient="records")),
        "spearman_first_final": float(df["first"].corr(df["final"], method="spearman")),
        "spearman_lr_first": float(df["lr"].corr(df["first"], method="spearman")),
        "spearman_lr_final": float(df["lr"].corr(df["final"], method="spearman")),
    }


def samples_for(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {
            "trainer.learning_rate": 10 ** rng.uniform(-4.5, -3.3),
            "selector.kind": kind,
            "knowledge.temperature": rng.uniform(1.0, 4.0),
            "trainer.seed": seed,
        }
        for kind in SELECTORS * 3
    ]


def main() -> None:
    quiet_hf()
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--slots", type=int, default=2, help="CPUs given to Ray (one per trial)")
    p.add_argument("--reduction-factor", type=int, default=3, help="ASHA's (grace period 1)")
    p.add_argument(
        "--seeds", type=int, default=2, help="benchmark seeds of the ASHA comparison (0: none)"
    )
    args = p.parse_args()
    steps, examples = (50, 3000) if args.quick else (100, 6000)
    slots, rf = args.slots, args.reduction_factor

    from kdray.search import ray_start

    # a fresh local Ray of `slots` CPUs, whatever else runs on this machine
    ray_start.start(ray_start.resolve("local"), num_cpus=slots, log_to_driver=False)
    storage = tempfile.mkdtemp(prefix="kdray-bench-sweep-")
    fifo = base_spec(args, steps, examples, "fifo")
    asha = base_spec(args, steps, examples, "asha")
    graced = base_spec(args, steps, examples, "asha", GRACE)
    t0 = time.perf_counter()
    teacher, shared = prepare_teachers(fifo)  # once: fine-tuned (or cached) teacher + outputs
    prep_s = time.perf_counter() - t0
    print(f"teacher and shared outputs ready in {prep_s:.0f} s; storage {storage}")

    done: dict[str, Any] = {}

    def bench(spec: SweepSpec, samples: list[dict[str, Any]], name: str,
              outputs: Any = shared) -> dict[str, Any]:  # fmt: skip
        out = run(spec, samples, storage, name, teacher, outputs, slots)
        done[name] = out
        write_json(args.out and f"{args.out}.partial", {"runs": done})  # kept if a later one fails
        print(f"{name}: {out['trials']} trials, wall {out['wall_s']:.0f} s, {out['steps']} steps, "
              f"best val {out['best_val']:.4f}")  # fmt: skip
        return out

    seeds = [{"trainer.seed": s} for s in range(8)]
    shared_run = bench(fifo, seeds, "shared")
    fresh = [{**s, "cache_dir": str(Path(storage) / f"cache-{i}")} for i, s in enumerate(seeds)]
    own_run = bench(fifo, fresh, "own", None)

    comparisons = []
    for seed in range(args.seeds):
        samples = samples_for(seed)
        arms = (("fifo", fifo), ("asha", asha), ("asha_grace", graced))
        runs = {k: bench(spec, samples, f"{k}-{seed}") for k, spec in arms}
        comparisons.append({
            "seed": seed,
            **{f"{k}_compute_fraction": runs[k]["steps"] / runs["fifo"]["steps"]
               for k in ("asha", "asha_grace")},
            **{f"{k}_{gap}": points(runs["fifo"][key], runs[k][key])
               for k in ("asha", "asha_grace")
               for gap, key in (("metric_gap", "best_val"), ("test_gap", "best_test"),
                                ("metric_gap_any_round", "best_val_any_round"))},
            "same_pick": {k: runs[k]["best_config"] == runs["fifo"]["best_config"]
                          for k in ("asha", "asha_grace")},
            "acks_steps": {k: sum(c["steps"] for c in r["curves"]
                                  if c["config"]["selector.kind"] == "acks")
                           for k, r in runs.items()},
            "pruning_bias": pruning_bias(runs["fifo"], rf),
            "runs": runs,
        })  # fmt: skip

    def mean(key: str) -> float | None:  # None with --seeds 0 (no ASHA comparison)
        return sum(c[key] for c in comparisons) / len(comparisons) if comparisons else None

    seed_keys = [f"{k}_{m}" for k in ("asha", "asha_grace")
                 for m in ("compute_fraction", "metric_gap", "test_gap")]  # fmt: skip

    breakdown = shared_run["breakdown_slot_s"]
    out = {
        "benchmark": "sweep",
        "settings": {"slots": slots, "student_steps": steps, "train_examples": examples,
                     "evaluations_per_trial": ROUNDS, "asha_grace_period": 1,
                     "asha_reduction_factor": rf, "selector_grace": GRACE, "seeds": args.seeds,
                     "quick": args.quick},
        "teacher_prep_s": prep_s,
        "efficiency": shared_run["busy_s"] / (shared_run["wall_s"] * slots),
        # the stricter reading: only the time inside kdray's trainable counts as work
        "efficiency_in_function": breakdown["in_function"] / breakdown["total"],
        "breakdown_share": {k: v / breakdown["total"] for k, v in breakdown.items()},
        "teacher_sharing_speedup": own_run["wall_s"] / shared_run["wall_s"],
        # inside tune.report (handing Tune a checkpoint) / the slots' time
        "tune_report_share": breakdown["busy_in_tune_report"] / breakdown["total"],
        "asha_compute_fraction": mean("asha_compute_fraction"),
        "asha_metric_gap": mean("asha_metric_gap"),
        "asha_grace_compute_fraction": mean("asha_grace_compute_fraction"),
        "asha_grace_metric_gap": mean("asha_grace_metric_gap"),
        **{f"{k}_{gap}": mean(f"{k}_{gap}") for k in ("asha", "asha_grace")
           for gap in ("test_gap", "metric_gap_any_round")},
        # over the benchmark seeds (paired: FIFO and ASHA run the same configs per seed)
        "ci95_over_seeds": {k: seed_interval([c[k] for c in comparisons]) for k in seed_keys},
        "comparisons": comparisons,
        "runs": {"shared": shared_run, "own": own_run},
        "machine": machine(),
    }  # fmt: skip
    print_table([{"part": k, "slot_s": v, "share": out["breakdown_share"][k]}
                 for k, v in breakdown.items()], ["part", "slot_s", "share"])  # fmt: skip
    rows = [{"seed": c["seed"], "run": k, "wall_s": r["wall_s"], "steps": r["steps"],
             "best_val": r["best_val"], "best_test": r["best_test"],
             "best_val_any_round": r["best_val_any_round"], "acks_steps": c["acks_steps"][k]}
            for c in comparisons for k, r in c["runs"].items()]  # fmt: skip
    print_table(rows, list(rows[0]) if rows else [])
    for c in comparisons:
        b = c["pruning_bias"]
        print(f"seed {c['seed']}: Spearman first rung vs end {b['spearman_first_final']:+.2f}, "
              f"learning rate vs first rung {b['spearman_lr_first']:+.2f}, vs end "
              f"{b['spearman_lr_final']:+.2f}")  # fmt: skip
        print_table(b["per_selector"], list(b["per_selector"][0]))
    print(f"efficiency {out['efficiency']:.3f} (>= 0.95; in the function "
          f"{out['efficiency_in_function']:.3f}); teacher_sharing_speedup "
          f"{out['teacher_sharing_speedup']:.2f}")  # fmt: skip
    print(f"tune.report share of slot time {out['tune_report_share']:.4f} (<= 0.01)")
    out["targets"] = {"efficiency_ge_0.95": out["efficiency"] >= 0.95,
                      "tune_report_share_le_0.01": out["tune_report_share"] <= 0.01}  # fmt: skip
    if comparisons:
        print(
            f"asha_compute_fraction {out['asha_compute_fraction']:.3f} (<= 0.35), gap "
            f"{out['asha_metric_gap']:.2f} points (<= 0.3); with selector_grace "
            f"{out['asha_grace_compute_fraction']:.3f}, gap {out['asha_grace_metric_gap']:.2f}"
        )
        print(f"held-out (dev) score of the picked trial, FIFO minus ASHA: "
              f"{out['asha_test_gap']:.2f} points (with selector_grace "
              f"{out['asha_grace_test_gap']:.2f}); best validation at any round: "
              f"{out['asha_metric_gap_any_round']:.2f} "
              f"({out['asha_grace_metric_gap_any_round']:.2f})")  # fmt: skip
        for k, ci in out["ci95_over_seeds"].items():
            if ci is not None:
                print(
                    f"{k}: mean {mean(k):.3f}, 95% interval over {len(comparisons)} seeds "
                    f"[{ci[0]:.3f}, {ci[1]:.3f}]"
                )
        out["targets"]["asha_compute_fraction_le_0.35"] = out["asha_compute_fraction"] <= 0.35
        out["targets"]["asha_metric_gap_le_0.3"] = out["asha_metric_gap"] <= 0.3
    write_json(args.out, out)
    shutil.rmtree(storage, ignore_errors=True)


if __name__ == "__main__":
    main()
