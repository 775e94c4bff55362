"""A sweep of 1,000 tiny trials on local Ray: what the driver, the disk and the analysis cost.

    python benchmarks/sweep_scale.py --out sweep_scale.json          # 1,000 trials, 5,000 copies
    python benchmarks/sweep_scale.py --quick --out sweep_scale.json  # 100 trials, 500 copies

The trials are the tests' tiny setting: a random BERT teacher (hidden 32, 2 layers, the MiniLM
vocabulary), a 1-layer student, 400 SST-2 examples, 10 steps, 2 evaluation rounds, knowledge
hard+soft+hidden+relation; searched over the learning rate and the selector (none, vanilla, all),
ASHA on the validation loss (grace 1, reduction factor 3), one CPU per trial, kdray's own trainable,
csv and tensorboard loggers, `sweep.keep: {students: best:5}`, run through `kdray.run_sweep` on a
local Ray of this machine's CPUs (the slots).

    wall_s                   `kdray.run_sweep` (the teacher's outputs, Tune's fit, the keep
                             rules at the end; report=False)
    per_trial_overhead_s     (wall x slots - sum of the trials' busy time) / trials: what Tune
                             and kdray's driver cost per trial beyond the trial itself
    tune_report_share        time inside tune.report / the trials' busy time
    driver_peak_rss_mb       this process (the driver) at its peak through the sweep;
                             analysis_peak_rss_mb through reading it and the report after,
                             synthetic_peak_rss_mb through the synthetic reads
    disk_peak_mb             the experiment folder, sampled every 2 s during the sweep, with
                             states_peak (training states in it at once) and
                             states_peak_one_trial (in one trial folder at once)
    disk_end_mb              the same at the end, with states_left: training states (files or
                             Tune checkpoint folders holding one) left in trial folders
    load_sweep_s             `kdray.analysis.load_sweep` of the result (phase logs and report
                             histories included); summary_s: with phases=False, history=False
                             (what the summary, the best trial and the keep rules read)
    report_s                 the end-of-sweep report (`kdray.analysis.report.end_of_sweep`)
    synthetic_*              the same two reads on --synthetic trial folders: the sweep's trial
                             folders copied (hard links) and entered in Tune's experiment state
                             again under new ids, so the reader meets that many trial folders
Aims: driver RSS < 2 GB and report < 60 s at 1,000 trials.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_common import (
    DiskSampler,
    count_states,
    folder_bytes,
    machine,
    parser,
    print_table,
    quiet_hf,
    write_json,
)


def tiny_space(teacher: str, data_dir: str, trials: int, cache: str) -> dict[str, Any]:
    trial = {
        "data": {"task": "sst2", "data_dir": data_dir, "max_length": 32,
                 "max_train_examples": 400, "max_test_examples": 64, "reward_fraction": 0.1},
        "teacher": {"path": teacher},
        "student": {"num_layers": 1, "init": "remap"},
        "knowledge": {"types": ["hard", "soft", "hidden", "relation"]},
        "selector": {"phase_length": 5, "reward_examples": 32},
        "trainer": {"max_steps": 10, "batch_size": 8, "eval_every": 5, "eval_batch_size": 64},
        "cache_dir": cache,
    }  # fmt: skip
    return {
        "name": "scale",
        "trial": trial,
        "search": {"trainer.learning_rate": {"loguniform": [1.0e-4, 1.0e-2]},
                   "selector.kind": {"choice": ["none", "vanilla", "all"]}},
        # val_loss: the tiny students all predict one class early on (one val_metric), and
        # ASHA prunes on differences; the 5 best students are kept (sweep.keep)
        "sweep": {"num_samples": trials, "searcher": "random", "scheduler": "asha",
                  "metric": "val_loss", "mode": "min", "keep": {"students": "best:5"},
                  "scheduler_options": {"grace_period": 1, "reduction_factor": 3},
                  "resources": {"cpu": 1}},
    }  # fmt: skip


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """fn(*args, **kwargs) and the seconds it took."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def replicate(experiment: Path, copies: int) -> int:
    """Enter every trial of `experiment` `copies` times in Tune's experiment state, each copy a
    hard-linked copy of the trial folder under a new id; returns the trials it then holds."""
    from ray.tune.experiment import Trial

    (state_file,) = experiment.glob("experiment_state-*.json")
    state = json.loads(state_file.read_text())
    originals = list(state["trial_data"])
    entries = list(originals)
    for k in range(1, copies):
        for trial_json, run_meta in originals:
            trial = Trial.from_json_state(trial_json, stub=True)
            source = Path(trial.path)
            trial.trial_id = f"{trial.trial_id}c{k}"
            trial.storage.trial_dir_name = f"{source.name}_c{k}"
            shutil.copytree(source, experiment / trial.storage.trial_dir_name,
                            copy_function=os.link)  # fmt: skip
            trial._state_json = None
            entries.append([trial.get_json_state()[0], run_meta])
    state["trial_data"] = entries
    state_file.write_text(json.dumps(state))
    return len(entries)


def main() -> None:
    quiet_hf()
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, help="trials of the sweep (default 1000; --quick 100)")
    p.add_argument("--synthetic", type=int, help="trial folders for the synthetic load_sweep "
                   "(a multiple of --trials; default 5x)")  # fmt: skip
    p.add_argument("--keep-folder", action="store_true", help="leave the sweep folder")
    args = p.parse_args()
    trials = args.trials or (100 if args.quick else 1000)
    synthetic = args.synthetic or 5 * trials

    import kdray
    from kdray.analysis import load_sweep
    from kdray.analysis.report import end_of_sweep
    from kdray.models.source import random_teacher

    work = Path(tempfile.mkdtemp(prefix="kdray-bench-scale-"))
    teacher = random_teacher(work / "teacher")
    cache = args.cache_dir or str(work / "cache")
    space = tiny_space(teacher, args.data_dir, trials, cache)
    storage = work / "results"
    sampler = DiskSampler(storage / "scale")
    sampler.start()
    t0 = time.perf_counter()
    run = kdray.run_sweep(space, storage=str(storage), report=False)
    wall = time.perf_counter() - t0
    sampler.done.set()
    sampler.join()
    sweep_rss = peak_rss_mb()  # the driver's high-water mark through the sweep
    experiment = Path(run.path)
    import ray

    slots = int(ray.cluster_resources().get("CPU", 1))  # the local Ray run_sweep started

    sweep, load_s = timed(load_sweep, experiment)
    summary_s = timed(load_sweep, experiment, phases=False, history=False)[1]
    t0 = time.perf_counter()
    end_of_sweep(str(experiment))
    report_s = time.perf_counter() - t0
    analysis_rss = peak_rss_mb()  # then through reading it and the report

    t = sweep.trials
    busy = float(t["wall_s"].fillna(0).sum())
    report_time = float(sweep.history.groupby("trial_id")["time_report_s"].max().sum())
    left = sum(count_states(experiment).values())
    counts = t["status"].value_counts().to_dict()

    copies = max(1, synthetic // len(t))
    n_synthetic = replicate(experiment, copies)
    big, synthetic_s = timed(load_sweep, experiment)
    synthetic_summary_s = timed(load_sweep, experiment, phases=False, history=False)[1]

    out = {
        "benchmark": "sweep_scale",
        "settings": {"trials": trials, "slots": slots, "quick": args.quick,
                     "scheduler": "asha (grace 1, reduction factor 3)"},
        "statuses": {k: int(v) for k, v in counts.items()},
        "wall_s": wall,
        "per_trial_overhead_s": (wall * slots - busy) / len(t),
        "tune_report_share": report_time / busy if busy else None,
        "driver_peak_rss_mb": sweep_rss,
        "analysis_peak_rss_mb": analysis_rss,
        "synthetic_peak_rss_mb": peak_rss_mb(),
        "disk_peak_mb": sampler.peak / 2**20,
        "states_peak": sampler.states_peak,
        "states_peak_one_trial": sampler.states_one_trial,
        "disk_end_mb": folder_bytes(experiment) / 2**20,
        "states_left": left,
        "load_sweep_s": load_s,
        "summary_s": summary_s,
        "report_s": report_s,
        "synthetic_trials": n_synthetic,
        "synthetic_trials_read": len(big.trials),
        "synthetic_load_sweep_s": synthetic_s,
        "synthetic_summary_s": synthetic_summary_s,
        "machine": machine(),
    }  # fmt: skip
    out["targets"] = {"driver_rss_lt_2gb": out["driver_peak_rss_mb"] < 2048,
                      "report_lt_60s": report_s < 60}  # fmt: skip
    rows = [{"measure": k, "value": v} for k, v in out.items()
            if isinstance(v, int | float) and not isinstance(v, bool)]  # fmt: skip
    print_table(rows, ["measure", "value"])
    print(f"statuses: {out['statuses']}; targets: {out['targets']}")
    write_json(args.out, out)
    if not args.keep_folder:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
