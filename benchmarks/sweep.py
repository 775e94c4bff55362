"""The sweep service on local Ray: slot efficiency, teacher sharing, ASHA against FIFO.

    python benchmarks/sweep.py --out sweep.json            # full
    python benchmarks/sweep.py --quick --out sweep.json    # <= 10 minutes on 2 CPUs

All runs use one local Ray with `--slots` CPUs (one per trial), kdray.sweep's own trainable
(`train_trial`, checkpoints to Tune, phase logs) and the quickstart's SST-2 setting: MiniLM teacher
(kdray.teacher's small recipe, cached after the first run), 2-layer `remap` student, knowledge
hard+soft+hidden+relation, 4 evaluation rounds per trial on a validation split of a fifth of
the examples (--quick: 32 steps, 3000 examples; full: 120 steps, 6000). Trials run as the sweep
runs them: Tune's reuse_actors on, so a worker keeps its imports from one trial to the next.

    efficiency               8 trials (selector all, seeds 0-7), teacher outputs shared:
                             Σ trial busy time (Tune's time_total_s) / (wall × slots); >= 0.85
    teacher_sharing_speedup  the same 8 trials, each computing its own teacher outputs (and data)
                             in a fresh cache, against the shared run: wall ratio
    asha_compute_fraction    the same 12 sampled configs (learning rate, selector, temperature)
    asha_metric_gap          under ASHA (grace 1, --reduction-factor, 3 by default) and FIFO:
                             student steps ASHA used / FIFO's (<= 0.5), and FIFO's best
                             validation metric minus ASHA's, in points (<= 0.5)
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_common import machine, parser, print_table, quiet_hf, write_json

from kdray.search_space import SweepSpec, parse_sweep
from kdray.sweep import prepare_teachers, run_config, train_trial, tune_config

TYPES = ["hard", "soft", "hidden", "relation"]


def base_spec(args: Any, steps: int, examples: int, scheduler: str) -> SweepSpec:
    return parse_sweep(
        {
            "name": "bench",
            "trial": {
                "data": {"task": "sst2", "data_dir": args.data_dir, "max_length": 64,
                         "max_train_examples": examples, "validation_fraction": 0.2,
                         "max_test_examples": 128},  # no metric here reads the test score
                "teacher": {"backbone": "minilm", "max_steps": 400, "max_train_examples": 20000},
                "student": {"num_layers": 2, "init": "remap"},
                "knowledge": {"types": TYPES},
                "selector": {"kind": "all", "phase_length": 10, "reward_examples": 128},
                "trainer": {"max_steps": steps, "batch_size": 32, "eval_every": steps // 4,
                            "save_student": False},
                "cache_dir": args.cache_dir,
            },
            "sweep": {"scheduler": scheduler, "searcher": "random", "num_samples": 1,
                      "scheduler_options": {"grace_period": 1,
                                            "reduction_factor": args.reduction_factor}
                      if scheduler == "asha" else {}},
        },
        "bench",
    ).absolute()  # fmt: skip


def unpack(config: dict[str, Any], **kwargs: Any) -> None:
    """Tune's trainable for a fixed list of configs: {"sample": {path: value}} -> one trial."""
    train_trial(config["sample"], **kwargs)


def run(spec: SweepSpec, samples: list[dict[str, Any]], storage: str, name: str,
        teachers: dict[str, str] | None, shared: Any) -> dict[str, Any]:  # fmt: skip
    """One Tune run over exactly `samples`; wall time, busy time and the per-trial results."""
    from ray import tune

    trainable = tune.with_resources(
        tune.with_parameters(unpack, spec=spec, teacher_paths=teachers, shared=shared), {"cpu": 1}
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"sample": tune.grid_search(samples)},
        tune_config=tune_config(spec, search_alg=None),  # the sweep's, over exactly `samples`
        run_config=run_config(
            spec, name, storage, verbose=0, failure_config=tune.FailureConfig(max_failures=0)
        ),
    )
    t0 = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - t0
    errors = [str(r.error) for r in grid if r.error]
    if errors:
        raise SystemExit(f"{name}: {len(errors)} trials failed: {errors[0][:500]}")
    trials = [r.metrics_dataframe for r in grid]
    return {
        "wall_s": wall,
        "busy_s": sum(float(df["time_total_s"].iloc[-1]) for df in trials),
        "steps": sum(int(df["step"].iloc[-1]) for df in trials),
        "best_val": max(float(df["val_metric"].max()) for df in trials),
        "trials": len(trials),
    }


def main() -> None:
    quiet_hf()
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--slots", type=int, default=2, help="CPUs given to Ray (one per trial)")
    p.add_argument("--reduction-factor", type=int, default=3, help="ASHA's (grace period 1)")
    args = p.parse_args()
    # a fifth of the examples validate: the sweep's metric (and ASHA's early ranking) must not
    # be decided by a handful of examples
    steps, examples = (32, 3000) if args.quick else (120, 6000)

    from kdray import ray_start

    # a fresh local Ray of `slots` CPUs, whatever else runs on this machine
    ray_start.start(ray_start.resolve("local"), num_cpus=args.slots, log_to_driver=False)
    storage = tempfile.mkdtemp(prefix="kdray-bench-sweep-")
    fifo = base_spec(args, steps, examples, "fifo")
    t0 = time.perf_counter()
    teacher, shared = prepare_teachers(fifo)  # once: fine-tuned (or cached) teacher + outputs
    prep_s = time.perf_counter() - t0
    print(f"teacher and shared outputs ready in {prep_s:.0f} s; storage {storage}")

    seeds = [{"trainer.seed": s} for s in range(8)]
    shared_run = run(fifo, seeds, storage, "shared", teacher, shared)
    fresh = [{**s, "cache_dir": str(Path(storage) / f"cache-{i}")} for i, s in enumerate(seeds)]
    own_run = run(fifo, fresh, storage, "own", teacher, None)

    rng = random.Random(0)
    samples = [
        {
            "trainer.learning_rate": 10 ** rng.uniform(-4.5, -3.0),
            "selector.kind": rng.choice(["none", "vanilla", "all", "acks"]),
            "knowledge.temperature": rng.uniform(1.0, 4.0),
        }
        for _ in range(12)
    ]
    fifo_run = run(fifo, samples, storage, "fifo", teacher, shared)
    asha_run = run(base_spec(args, steps, examples, "asha"), samples, storage, "asha", teacher,
                   shared)  # fmt: skip

    slots = args.slots
    out = {
        "benchmark": "sweep",
        "settings": {"slots": slots, "student_steps": steps, "train_examples": examples,
                     "asha_reduction_factor": args.reduction_factor,
                     "evaluations_per_trial": 4, "quick": args.quick},
        "teacher_prep_s": prep_s,
        "efficiency": shared_run["busy_s"] / (shared_run["wall_s"] * slots),
        "teacher_sharing_speedup": own_run["wall_s"] / shared_run["wall_s"],
        "asha_compute_fraction": asha_run["steps"] / fifo_run["steps"],
        "asha_metric_gap": 100 * (fifo_run["best_val"] - asha_run["best_val"]),
        "runs": {"shared": shared_run, "own": own_run, "fifo": fifo_run, "asha": asha_run},
        "samples": samples,
        "machine": machine(),
    }  # fmt: skip
    rows = [{"run": k, **{c: v for c, v in r.items()}} for k, r in out["runs"].items()]
    print_table(rows, ["run", "trials", "wall_s", "busy_s", "steps", "best_val"])
    print(f"efficiency {out['efficiency']:.3f} (target >= 0.85); teacher_sharing_speedup "
          f"{out['teacher_sharing_speedup']:.2f}; asha_compute_fraction "
          f"{out['asha_compute_fraction']:.3f} (<= 0.5); asha_metric_gap "
          f"{out['asha_metric_gap']:.2f} points (<= 0.5)")  # fmt: skip
    out["targets"] = {
        "efficiency_ge_0.85": out["efficiency"] >= 0.85,
        "asha_compute_fraction_le_0.5": out["asha_compute_fraction"] <= 0.5,
        "asha_metric_gap_le_0.5": out["asha_metric_gap"] <= 0.5,
    }
    write_json(args.out, out)
    import shutil

    shutil.rmtree(storage, ignore_errors=True)  # checkpoints of ~40 trials: not worth keeping


if __name__ == "__main__":
    main()
