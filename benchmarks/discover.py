"""Discover, then exploit: does the schedule a probe sweep finds beat the methods around it?

    python benchmarks/discover.py --task sst2 --data-dir ../shared/glue --out discover_sst2.json
    python benchmarks/discover.py --task mrpc --data-dir ../shared/glue --out discover_mrpc.json

1. Discover: the probe sweep `search_spaces/probe_<task>.yaml` (random_soft runs that, in
   each quarter of training, fork and train a few steps under each knowledge type; their
   paired effects are the report's knowledge x phase table) through `kdray.run_sweep`. Its
   report exports the schedule (`analysis/schedule.yaml`: hard labels, and per progress
   bucket each type with a positive effect, weighted by it) and the trial config that replays
   it (`analysis/replay.yaml`), and ends with the command that runs it.
2. Exploit: students from that replay config (the probe sweep's trial, without probes) with
   `selector: schedule` (the discovered schedule), `all`, `none`, `vanilla` and `acks`, over
   the same --seeds seeds (100, 101, ...: none of the probe runs' seeds), scored on GLUE dev.
3. The verdicts of the schedule against each, paired over seeds and dev examples
   (`kdray.analysis.stats.paired_comparison`), next to the best constant prediction: a task
   where no method beats it says nothing about the methods.

The JSON holds the sweep's folder and wall time, the schedule, each run's dev score and wall
time, and the paired table. Run folders go to a temporary folder (removed) or --work DIR
(kept; a rerun reads finished students back).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from arms import work_folder
from bench_common import machine, parser, print_paired, print_table, quiet_hf, write_json

import kdray
from kdray.analysis.methods import aligned_predictions
from kdray.analysis.stats import UNINFORMATIVE, paired_comparison
from kdray.base.results import PREDICTIONS
from kdray.data.metrics import constant_score
from kdray.data.tasks import get_task

REPO = Path(__file__).resolve().parents[1]
#: The students' selectors; the schedule's comes from the probe sweep's report.
METHODS: dict[str, dict[str, Any]] = {
    "all": {"kind": "all"},
    "none": {"kind": "none"},
    "vanilla": {"kind": "vanilla"},
    "acks": {"kind": "acks"},
}
#: The first student seed: apart from the probe sweep's (a grid from 0).
FIRST_SEED = 100


def main() -> None:
    quiet_hf()
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--task", default="sst2", help="a task with search_spaces/probe_<task>.yaml")
    p.add_argument("--seeds", type=int, default=3, help="student seeds per method (default 3)")
    p.add_argument("--work", help="keep the sweep and run folders here (default: temporary)")
    args = p.parse_args()
    space = REPO / "search_spaces" / f"probe_{args.task}.yaml"
    if not space.is_file():
        p.error(
            f"--task {args.task}: no {space.relative_to(REPO)}; probe sweeps: "
            + ", ".join(f.stem[6:] for f in sorted(space.parent.glob("probe_*.yaml")))
        )
    if args.seeds < 1:
        p.error("--seeds must be >= 1")
    over = {"trial.trainer.max_steps": 60, "trial.probe.steps": 4} if args.quick else {}
    t0 = time.perf_counter()
    with work_folder(args.work, "kdray-discover-") as work:
        out = run(args, space, over, work)
    out["total_wall_s"] = time.perf_counter() - t0
    report(out)
    write_json(args.out, out)


def run(args: Any, space: Path, over: dict[str, Any], work: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    sweep = kdray.run_sweep(space, data_dir=args.data_dir, storage=str(work / "sweeps"),
                            overrides=over)  # fmt: skip
    replay = Path(sweep.path) / "analysis" / "replay.yaml"
    if not replay.is_file():
        raise SystemExit(f"{sweep.path}: the report exported no schedule (see its report.md)")
    base = yaml.safe_load(replay.read_text())
    if args.quick:
        base["trainer"]["max_steps"] = over["trial.trainer.max_steps"]
    schedule = yaml.safe_load(Path(base["selector"]["schedule_file"]).read_text())
    out: dict[str, Any] = {
        "benchmark": "discover", "task": args.task, "sweep": sweep.path,
        "sweep_wall_s": time.perf_counter() - t0, "schedule": schedule["schedule"],
        "replay": str(replay), "methods": {}, "machine": machine(),
        "settings": {"seeds": list(range(FIRST_SEED, FIRST_SEED + args.seeds)),
                     "steps": base["trainer"]["max_steps"], "quick": args.quick},
    }  # fmt: skip
    print(f"probe sweep: {out['sweep_wall_s']:.0f} s; schedule {replay.parent / 'schedule.yaml'}")
    selectors = {"schedule": base["selector"]} | {
        name: {**sel, "phase_length": base["selector"]["phase_length"]}
        for name, sel in METHODS.items()
    }
    preds: dict[str, list[pd.DataFrame]] = {}
    for seed in out["settings"]["seeds"]:  # seed-major: a cut-short run still pairs
        for name, selector in selectors.items():
            folder = work / "students" / f"{name}-s{seed}"
            trainer = {**base["trainer"], "seed": seed, "output_dir": str(folder)}
            cfg = {**base, "selector": selector, "trainer": trainer}
            result = kdray.run_trial(cfg, data_dir=args.data_dir)
            if result.status != "finished":
                raise SystemExit(f"{name} seed {seed}: {result.status} at step {result.steps}")
            preds.setdefault(name, []).append(pd.read_parquet(folder / PREDICTIONS))
            row = out["methods"].setdefault(name, {"runs": [], "wall_s": []})
            row["runs"].append(result.test_score)
            row["wall_s"].append(result.wall_s)
            out["metric"] = result.main_metric
            print(f"  {name} seed {seed}: dev {result.test_score:.4f} ({result.wall_s:.0f} s)",
                  flush=True)  # fmt: skip
        write_json(args.out, out)  # partial results survive an interruption
    labels, stacks = aligned_predictions(preds)
    out["constant"] = constant_score(get_task(args.task), labels)
    out["paired"] = {}
    for name in METHODS:
        c = paired_comparison(out["metric"], stacks["schedule"], stacks[name], labels)
        out["paired"][f"schedule − {name}"] = c
    best = max(statistics.mean(m["runs"]) for m in out["methods"].values())
    out["informative"] = best > out["constant"]
    if not out["informative"]:  # the differences are noise: no verdict
        for c in out["paired"].values():
            c["verdict"] = UNINFORMATIVE
    return out


def report(out: dict[str, Any]) -> None:
    rows = [{"method": "(constant)", "dev": f"{out['constant']:.4f}"}]
    for name, m in out["methods"].items():
        sd = statistics.stdev(m["runs"]) if len(m["runs"]) > 1 else 0.0
        mean, wall = statistics.mean(m["runs"]), statistics.mean(m["wall_s"])
        rows.append({"method": name, "dev": f"{mean:.4f} ± {sd:.4f}", "runs": len(m["runs"]),
                     "wall_s": f"{wall:.0f}"})  # fmt: skip
    print(f"\n{out['task']}: GLUE dev {out['metric']}, mean ± std over seeds "
          f"{out['settings']['seeds']}, {out['settings']['steps']} steps")  # fmt: skip
    print_table(rows, ["method", "dev", "runs", "wall_s"])
    note = "" if out["informative"] else " (no method beats the constant: read as noise)"
    print_paired([{"comparison": k, **v} for k, v in out["paired"].items()],
                 f"the discovered schedule against each{note}")  # fmt: skip
    print(f"probe sweep {out['sweep_wall_s']:.0f} s; total {out['total_wall_s']:.0f} s")


if __name__ == "__main__":
    main()
