"""Student quality per selector, same teacher, same student step budget, several seeds.

    python benchmarks/quality.py --data-dir ../shared/glue --seeds 3 --out quality.json
    python benchmarks/quality.py --quick                      # SST-2 subset, 1 seed, minutes

Per task (default SST-2, MRPC, RTE from the GLUE folder): the MiniLM teacher fine-tuned by
kdray (`kdray.teacher`, cached after the first run); a 2-layer `remap` student; knowledge
hard+soft+hidden+relation; the same number of final-student steps for every method:

    none              hard labels only (fine-tuning)
    vanilla           (1 - α)·hard + α·soft, α = 0.5
    all               every type at weight 1
    random_soft       a_k ~ U[0, 1] per phase
    acks_online_soft  ACKS learning during the run (soft actions)
    acks_two_stage    ACKS: E stage-A episodes, then the final run with the frozen actor
    acks_online_hard  ACKS with hard actions (unselected losses not computed)
    schedule          with --schedule FILE: replay a schedule exported by `kdray.analyze`
                      (a sweep's discovery reused without the agent)

Teacher outputs are computed once per task for all methods and shared. Scores are the task's
main metric on GLUE dev (the test split), mean ± std over seeds, with the mean wall time of a
run (two-stage includes its episodes). Also reported: the per-phase weights ACKS chose in one
run, and per task the score of the best constant prediction (majority class; all-positive F1
on MRPC) with the methods that do not beat it.

Paired comparisons: every ACKS variant against each of --references (default all, vanilla,
random_soft), on the seeds both ran: the mean of the per-seed dev differences and a 95%
interval from the Multi-Bootstrap (seeds, then dev examples, drawn with replacement, the same
draws for both methods; each run's per-example predictions are its predictions.parquet), with
the verdict. A task where no method beats the constant prediction is marked uninformative: its
differences are noise, and it is left out of the cross-task mean (the table says so).
Targets: teacher SST-2 dev accuracy >= 0.88; vanilla and all beat none; the best ACKS
variant >= all and >= vanilla on the 3-task mean.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import pandas as pd
from arms import matched_epsilon, work_folder
from bench_common import machine, parser, print_paired, print_table, quiet_hf, write_json

from kdray.analysis.methods import aligned_predictions
from kdray.analysis.stats import paired_comparison
from kdray.base.errors import ConfigError
from kdray.base.results import PHASE_LOG, PREDICTIONS
from kdray.config import TrialConfig
from kdray.data.glue import read_glue_tsv
from kdray.data.metrics import constant_score
from kdray.data.tasks import get_task
from kdray.models.card import read_model_meta
from kdray.training.build import shared_teacher_outputs
from kdray.training.fine_tune import resolve_teachers
from kdray.training.trainer import distil, setup

TYPES = ["hard", "soft", "hidden", "relation"]
METHODS: dict[str, dict[str, Any]] = {
    "none": {"kind": "none"},
    "vanilla": {"kind": "vanilla", "alpha": 0.5},
    "all": {"kind": "all"},
    "random_soft": {"kind": "random_soft"},
    "acks_online_soft": {"kind": "acks", "action": "soft"},
    "acks_two_stage": {"kind": "acks", "action": "soft", "mode": "two_stage", "episodes": 1},
    "acks_online_hard": {"kind": "acks", "action": "hard"},
    # hard labels only, smoothed: soft targets without a teacher (the control for vanilla)
    "smooth_0.1": {"kind": "none"},
    "smooth_matched": {"kind": "none"},
}
#: The smoothing methods' ε (`knowledge.label_smoothing`); None: matched per task to the
#: teacher's soft labels (their mean entropy on the training rows at the run's temperature).
SMOOTHING: dict[str, float | None] = {"smooth_0.1": 0.1, "smooth_matched": None}
#: Soft targets with and without a teacher, paired (those run), besides the ACKS pairs.
CONTROLS = [("vanilla", "smooth_matched"), ("all", "smooth_matched"), ("vanilla", "smooth_0.1"),
            ("smooth_matched", "none"), ("smooth_0.1", "none")]  # fmt: skip
#: Per task: max length, teacher epochs (small tasks need several), train.tsv rows used by the
#: students (the teacher always sees its whole training split), and that cap in --quick.
TASKS: dict[str, dict[str, Any]] = {
    "sst2": {"max_length": 64, "teacher_epochs": 1.0, "examples": 20000, "quick_examples": 4000},
    "mrpc": {"max_length": 128, "teacher_epochs": 3.0, "examples": None, "quick_examples": 1000},
    "rte": {"max_length": 128, "teacher_epochs": 3.0, "examples": None, "quick_examples": 1000},
}


def task_config(task: str, args: Any, steps: int) -> TrialConfig:
    t = TASKS[task]
    return TrialConfig.from_dict(
        {
            "data": {"task": task, "data_dir": args.data_dir, "max_length": t["max_length"],
                     "max_train_examples": t["quick_examples" if args.quick else "examples"]},
            "teacher": {"epochs": t["teacher_epochs"]} if not args.teacher_steps else
                       {"max_steps": args.teacher_steps, "max_train_examples": t["examples"]},
            "student": {"num_layers": 2, "init": "remap"},
            "knowledge": {"types": TYPES, "temperature": 2.0},
            "selector": {"phase_length": args.phase_length},
            "trainer": {"max_steps": steps, "batch_size": 32, "learning_rate": 1e-4,
                        "eval_every": steps, "save_student": False},
            "cache_dir": args.cache_dir,
        }
    )  # fmt: skip


def method_overrides(name: str, matched: float = 0.0) -> dict[str, Any]:
    """A method of METHODS as config overrides (selector.<key>: value, and a smoothing
    method's knowledge.label_smoothing; `matched`: smooth_matched's ε on this task)."""
    over = {f"selector.{k}": v for k, v in METHODS[name].items()}
    if name in SMOOTHING:
        eps = SMOOTHING[name]
        over["knowledge.label_smoothing"] = matched if eps is None else eps
    return over


def weights_by_phase(run_dir: str) -> list[dict[str, float]]:
    """Per-phase weights of one run's final episode (from its phase log)."""
    log = pd.read_parquet(Path(run_dir) / PHASE_LOG)
    log = log[log["final"]]
    cols = ["phase", "progress", *(f"w_{k}" for k in TYPES), "reward"]
    return [{k: float(v) for k, v in row.items()} for row in log[cols].to_dict("records")]


def main() -> None:
    quiet_hf()
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=None, help="final-student steps per run")
    p.add_argument("--phase-length", type=int, default=25)
    p.add_argument("--tasks", default="sst2,mrpc,rte")
    p.add_argument("--methods", default=None, help="default: all of them")
    p.add_argument(
        "--references",
        default="all,vanilla,random_soft",
        help="the methods every ACKS variant is compared with, paired (those run)",
    )
    p.add_argument(
        "--teacher-steps",
        type=int,
        default=None,
        help="fine-tune the teacher for this many steps (on the students' training rows) "
        "instead of its epochs (e.g. 400: the quickstart's recipe before it was shortened)",
    )
    p.add_argument(
        "--work", default=None, help="keep the run folders here (default: a temporary folder)"
    )
    p.add_argument(
        "--schedule",
        metavar="FILE",
        help="a schedule.yaml from `python -m kdray.analyze`: adds method 'schedule'",
    )
    p.add_argument(
        "--merge",
        nargs="+",
        metavar="JSON",
        help="no runs: combine the tasks of earlier --out files into one table",
    )
    args = p.parse_args()
    if args.merge:
        summarize(merge(args.merge, args.data_dir), args.out)
        return
    if args.schedule:
        METHODS["schedule"] = {
            "kind": "schedule",
            "schedule_file": str(Path(args.schedule).expanduser().resolve()),
        }
    tasks = args.tasks.split(",")
    methods = (args.methods or ",".join(METHODS)).split(",")
    unknown = [m for m in methods if m not in METHODS] + [t for t in tasks if t not in TASKS]
    if unknown:
        p.error(
            f"unknown task or method: {', '.join(unknown)}"
            + (" ('schedule' needs --schedule FILE)" if "schedule" in unknown else "")
        )
    if args.schedule and "schedule" not in methods:
        p.error("--schedule given but 'schedule' is not in --methods")
    if args.quick:
        tasks, seeds, steps = tasks[:1], 1, args.steps or 100
    else:
        seeds, steps = args.seeds, args.steps or 300
    if args.schedule:  # the file against this benchmark's knowledge types, before any run
        try:
            task_config(tasks[0], args, steps).replace(**method_overrides("schedule"))
        except ConfigError as e:
            p.error(f"--schedule: {e}")
    out: dict[str, Any] = {
        "benchmark": "quality",
        "tasks": {},
        "settings": {"student_steps": steps, "seeds": seeds, "student_layers": 2,
                     "phase_length": args.phase_length, "knowledge": TYPES, "quick": args.quick},
        "machine": machine(),
    }  # fmt: skip
    with work_folder(args.work, "kdray-quality-") as work:
        for task in tasks:
            run_task(task, args, methods, seeds, steps, work, out)
    summarize(out, args.out)


def run_task(
    task: str, args: Any, methods: list[str], seeds: int, steps: int, work: Path,
    out: dict[str, Any],
) -> None:  # fmt: skip
    """Every method over the seeds on one task; the task's entry of `out`, with the paired
    comparisons."""
    base = task_config(task, args, steps)
    t0 = time.perf_counter()
    teachers = resolve_teachers(base, progress=True)
    teacher = teachers["teacher"]
    meta = read_model_meta(teacher)
    main_metric = meta["main_metric"]
    teacher_dev = meta["test"]["dev"][main_metric]
    shared = shared_teacher_outputs(base, teachers, progress=True)
    s = setup(base, teachers, teacher_outputs=shared)
    print(f"{task}: teacher dev {main_metric} {teacher_dev:.4f}; ready in "
          f"{time.perf_counter() - t0:.0f} s")  # fmt: skip
    constant = constant_score(s.spec, next(iter(s.data.test.values())).labels)
    entry: dict[str, Any] = {"teacher": teacher_dev, "metric": main_metric,
                             "constant": constant, "methods": {}}  # fmt: skip
    if "smooth_matched" in methods:
        entry["smoothing"] = matched_epsilon(teacher, s.data.train, base)
        print(f"{task}: teacher soft labels at τ {base.knowledge.temperature}: mean entropy "
              f"{entry['smoothing']['teacher_entropy']:.4f} nats; matched ε "
              f"{entry['smoothing']['epsilon']:.4f}")  # fmt: skip
    matched = entry.get("smoothing", {}).get("epsilon", 0.0)
    out["tasks"][task] = entry
    preds: dict[str, dict[int, Any]] = {}
    for name in methods:
        scores, walls = [], []
        preds[name] = {}
        for seed in range(seeds):
            # selector.seed follows trainer.seed
            folder = work / task / f"{name}-s{seed}"
            cfg = base.replace(
                **method_overrides(name, matched),
                **{"trainer.seed": seed, "trainer.output_dir": str(folder)},
            )
            result = distil(cfg, teacher_outputs=shared, teacher_paths=teachers)
            preds[name][seed] = pd.read_parquet(folder / PREDICTIONS)
            scores.append(result.test_score)
            walls.append(result.wall_s)
            print(f"  {task} {name} seed {seed}: dev {result.test_score:.4f} "
                  f"({result.wall_s:.0f} s)")  # fmt: skip
            if name == "acks_online_soft" and seed == 0:
                entry["acks_weights_by_phase"] = weights_by_phase(result.output_dir)
        entry["methods"][name] = {
            "mean": statistics.mean(scores),
            "std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
            "runs": scores,
            "wall_s": statistics.mean(walls),
        }
        entry["paired"] = paired_table(preds, main_metric, args.references.split(","))
        write_json(args.out, out)  # partial results survive an interruption


def paired_table(
    preds: dict[str, dict[int, pd.DataFrame]], metric: str, references: list[str]
) -> dict[str, Any]:
    """Each ACKS variant run so far against each reference run so far, and the soft targets
    with a teacher against those without (CONTROLS), on their common seeds."""
    out = {}
    pairs = [(a, b) for a in preds if a.startswith("acks") for b in references if b != a]
    for a, b in [*pairs, *CONTROLS]:
        seeds = sorted(set(preds.get(a, {})) & set(preds.get(b, {})))
        if not seeds:
            continue
        labels, x = aligned_predictions({m: [preds[m][s] for s in seeds] for m in (a, b)})
        out[f"{a} − {b}"] = {"a": a, "b": b, **paired_comparison(metric, x[a], x[b], labels)}
    return out


def merge(paths: list[str], data_dir: str) -> dict[str, Any]:
    """One result from several runs over different tasks (same methods and settings); files
    written before the constant-prediction score existed get it from the GLUE dev labels."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    out = {**runs[0], "tasks": {}, "merged_from": paths}
    for run in runs:
        if run["settings"] != runs[0]["settings"]:
            raise SystemExit(
                f"--merge: settings differ: {run['settings']} vs {runs[0]['settings']}"
            )
        for task, entry in run["tasks"].items():  # methods of one task may come from several runs
            merged = out["tasks"].setdefault(task, {**entry, "methods": {}})
            if "constant" not in merged:
                spec = get_task(task)
                merged["constant"] = constant_score(
                    spec, read_glue_tsv(spec, Path(data_dir))["dev"].labels
                )
            merged["methods"].update(entry["methods"])
            if "acks_weights_by_phase" in entry:
                merged["acks_weights_by_phase"] = entry["acks_weights_by_phase"]
    return out


def informative(entry: dict[str, Any]) -> bool:
    """Some method beats the task's constant prediction (else its differences are noise)."""
    if "constant" not in entry:
        return True
    return any(m["mean"] > entry["constant"] for m in entry["methods"].values())


def summarize(out: dict[str, Any], path: str | None) -> None:
    """The cross-task mean (informative tasks only), the table, the paired comparisons, the
    targets and ACKS's per-phase weights; writes the JSON."""
    tasks = list(out["tasks"])
    known = [*METHODS, *(m for m in out["tasks"][tasks[0]]["methods"] if m not in METHODS)]
    methods = [m for m in known if all(m in out["tasks"][t]["methods"] for t in tasks)]
    steps, seeds = out["settings"]["student_steps"], out["settings"]["seeds"]
    used = [t for t in tasks if informative(out["tasks"][t])]
    out["uninformative_tasks"] = [t for t in tasks if t not in used]
    means = {
        m: statistics.mean(out["tasks"][t]["methods"][m]["mean"] for t in used) if used
        else float("nan") for m in methods
    }  # fmt: skip
    out["mean_over_tasks"] = means
    rows: list[dict[str, Any]] = []
    if all("constant" in out["tasks"][t] for t in tasks):
        constant = {t: out["tasks"][t]["constant"] for t in tasks}
        rows.append({"method": "(constant)", **{t: f"{v:.4f}" for t, v in constant.items()},
                     "mean": statistics.mean(constant.values())})  # fmt: skip
        out["not_above_constant"] = {
            t: [m for m in methods if out["tasks"][t]["methods"][m]["mean"] <= constant[t]]
            for t in tasks
        }
    for m in methods:
        row: dict[str, Any] = {"method": m}
        for t in tasks:
            r = out["tasks"][t]["methods"][m]
            row[t] = f"{r['mean']:.4f} ± {r['std']:.4f}"
            row[f"{t}_s"] = f"{r['wall_s']:.0f}"
        row["mean"] = means[m]
        rows.append(row)
    print(f"\nGLUE dev main metric, {steps} student steps, {seeds} seeds; teacher: "
          + ", ".join(f"{t} {out['tasks'][t]['teacher']:.4f}" for t in tasks))  # fmt: skip
    print_table(rows, ["method", *(c for t in tasks for c in (t, f"{t}_s")), "mean"])
    for t in out["uninformative_tasks"]:
        print(f"{t}: uninformative (no method beats the constant prediction "
              f"{out['tasks'][t]['constant']:.4f}); left out of the mean")  # fmt: skip
    for t in tasks:
        pairs = out["tasks"][t].get("paired", {})
        if not pairs:
            continue
        note = "" if t in used else " (uninformative task: read as noise)"
        print_paired([{"comparison": k, **v} for k, v in pairs.items()], f"{t}: paired{note}")
    checks: dict[str, bool] = {}
    if "sst2" in tasks:
        checks["teacher_sst2_ge_0.88"] = out["tasks"]["sst2"]["teacher"] >= 0.88
    if {"none", "vanilla", "all"} <= set(methods):
        checks["vanilla_beats_none"] = means["vanilla"] > means["none"]
        checks["all_beats_none"] = means["all"] > means["none"]
    acks = [m for m in methods if m.startswith("acks")]
    if acks and {"vanilla", "all"} <= set(methods):
        best = max(acks, key=lambda m: means[m])
        checks[f"best_acks_{best}_ge_all"] = means[best] >= means["all"]
        checks[f"best_acks_{best}_ge_vanilla"] = means[best] >= means["vanilla"]
    if "schedule" in methods and acks:
        checks[f"schedule_ge_{acks[0]}"] = means["schedule"] >= means[acks[0]]
    out["targets"] = checks
    print("targets:", ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in checks.items()))
    for t, below in out.get("not_above_constant", {}).items():
        if below:
            print(
                f"{t}: not above the constant prediction ({out['tasks'][t]['constant']:.4f}): "
                + ("every method" if len(below) == len(methods) else ", ".join(below))
            )
    first = out["tasks"][tasks[0]]
    if "acks_weights_by_phase" in first:
        print(f"\nACKS (online, soft) weights per phase, {tasks[0]} seed 0:")
        print_table(
            first["acks_weights_by_phase"], ["phase", "progress", *(f"w_{k}" for k in TYPES)]
        )
    write_json(path, out)


if __name__ == "__main__":
    main()
