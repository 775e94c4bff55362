"""MLKD-BERT quality arms on SST-2: two-stage vs one-stage vs vanilla KD, and the
12 -> 3-head drop of MLKD against vanilla's.

    python benchmarks/recipes.py --data-dir ../shared/glue --out recipes.json [--quick] [--seeds 2]

A 2-layer student (init remap) distils from the 6-layer all-MiniLM-L6-v2 teacher fine-tuned on
SST-2 (the multi-teacher benchmark's T1: 400 steps on 20000 rows, cached, so both benchmarks
fine-tune it once). Arms, each a kdray recipe (`recipe:` in the config, kdray/recipes/):
hard only; vanilla (hard + soft) at 12 and 3 heads; MLKD two-stage at 12 and 3 heads; MLKD
one-stage (its six losses together) at 12 heads; TinyBERT-style (hidden + attention + soft)
at 12 heads. 3-head students keep the teacher's width (remap re-groups the copied projections).
Every arm runs the same seeds on the same data; the teacher's outputs are cached per arm.

Reported: GLUE dev accuracy per arm (mean ± std over seeds), and paired comparisons (per-seed
differences; 95% interval resampling seeds and dev examples, the same draws for every
arm): MLKD two-stage − vanilla, two-stage − one-stage,
TinyBERT − vanilla, MLKD − hard, and the head drops: MLKD 12 − 3, vanilla 12 − 3 and vanilla's
drop − MLKD's drop (positive: MLKD loses less from fewer heads). A verdict for each
("better", "worse", "no detectable difference at this scale"). If no arm beats the constant
prediction, the comparisons say nothing and the table says so. Full: 8000 training
examples, 400 steps of batch 32; --quick: 2000, 80 of batch 16; --steps N sets the steps
(validation every N/4). Run folders go to a temporary folder (removed) or --work DIR (kept;
reruns reuse finished runs).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from arms import Done, method_row, paired_contrast, prepare, print_arms, run_arm, work_folder
from bench_common import machine, parser, quiet_hf, write_json

from kdray.data.metrics import constant_score
from kdray.data.tasks import TASKS
from kdray.models.classifier import load_classifier
from kdray.models.device import pick_device
from kdray.training.loop import evaluate

#: Arm name -> config sections merged over the base.
ARMS: dict[str, dict[str, Any]] = {
    "hard": {"knowledge": {"types": ["hard"]}, "selector": {"kind": "all"}},
    "vanilla_12h": {"recipe": "vanilla"},
    "vanilla_3h": {"recipe": "vanilla", "student": {"num_heads": 3}},
    "mlkd_12h": {"recipe": "mlkd"},
    "mlkd_3h": {"recipe": "mlkd", "student": {"num_heads": 3}},
    "mlkd_one_stage_12h": {"recipe": "mlkd_one_stage"},
    "tinybert_12h": {"recipe": "tinybert"},
}
#: Comparisons: name -> {arm: weight} (a − b is {a: 1, b: −1}).
CONTRASTS: dict[str, dict[str, float]] = {
    "mlkd_minus_vanilla": {"mlkd_12h": 1, "vanilla_12h": -1},
    "mlkd_two_stage_minus_one_stage": {"mlkd_12h": 1, "mlkd_one_stage_12h": -1},
    "tinybert_minus_vanilla": {"tinybert_12h": 1, "vanilla_12h": -1},
    "mlkd_minus_hard": {"mlkd_12h": 1, "hard": -1},
    "mlkd_drop_12_to_3": {"mlkd_12h": 1, "mlkd_3h": -1},
    "vanilla_drop_12_to_3": {"vanilla_12h": 1, "vanilla_3h": -1},
    # vanilla's 12 -> 3-head drop minus MLKD's: > 0 ("better") when MLKD loses less
    "vanilla_drop_minus_mlkd_drop": {"vanilla_12h": 1, "vanilla_3h": -1, "mlkd_12h": -1,
                                     "mlkd_3h": 1},
}  # fmt: skip


def settings(quick: bool) -> dict[str, Any]:
    if quick:
        return {"examples": 2000, "steps": 80, "batch_size": 16, "eval_every": 40,
                "phase_length": 10}  # fmt: skip
    return {"examples": 8000, "steps": 400, "batch_size": 32, "eval_every": 100,
            "phase_length": 25}  # fmt: skip


def base_config(args: Any, st: dict[str, Any]) -> dict[str, Any]:
    """Every arm's starting config. No knowledge types here: they are each recipe's."""
    teacher = {"backbone": "minilm", "batch_size": 32, "learning_rate": 5e-5, "max_steps": 400,
               "max_train_examples": 20000, "seed": 0}  # fmt: skip
    return {
        "data": {"task": "sst2", "data_dir": args.data_dir, "max_length": 64,
                 "max_train_examples": st["examples"]},
        "teacher": teacher,
        "student": {"num_layers": 2, "init": "remap"},
        "selector": {"phase_length": st["phase_length"]},
        "trainer": {"max_steps": st["steps"], "batch_size": st["batch_size"],
                    "learning_rate": 1e-4, "eval_every": st["eval_every"], "seed": 0},
        "cache_dir": args.cache_dir,
    }  # fmt: skip


def main() -> None:
    quiet_hf()
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=2, help="seeds of every arm (default 2)")
    p.add_argument(
        "--steps", type=int, default=None, help="student steps per run (default 400, --quick 80)"
    )
    p.add_argument("--work", help="keep the run folders here (default: a temporary folder)")
    args = p.parse_args()
    if args.seeds < 1:
        p.error("--seeds must be >= 1")
    t_start = time.perf_counter()
    st = settings(args.quick)
    if args.steps:
        st |= {"steps": args.steps, "eval_every": max(1, args.steps // 4)}
    raw = base_config(args, st)
    with work_folder(args.work, "kdray-recipes-") as work:
        out = run_benchmark(args, st, raw, work)
    out["total_wall_s"] = time.perf_counter() - t_start
    summarize(out, args.out)


def run_benchmark(args: Any, st: dict[str, Any], raw: dict[str, Any], work: Path) -> dict[str, Any]:
    base, paths, data = prepare(raw, ARMS, work)
    spec = TASKS[base.data.task]
    dev = next(iter(data.test.values()))
    tr, device = base.trainer, pick_device(base.trainer.device)
    teacher = load_classifier(paths["teacher"]).to(device)
    scores = {split: evaluate(teacher, part, spec, device, tr.eval_batch_size, tr.bf16)
              for split, part in (("validation", data.validation), ("dev", dev))}  # fmt: skip
    constant = constant_score(spec, dev.labels)
    out: dict[str, Any] = {
        "benchmark": "recipes",
        "metric": spec.main_metric,
        "dev_examples": len(dev),
        "constant": constant,
        "teachers": {"teacher": {k: v[spec.main_metric] for k, v in scores.items()}},
        "methods": {},
        "config": {
            "base": raw,
            "arms": ARMS,
            "contrasts": CONTRASTS,
            "quick": args.quick,
            "seeds": args.seeds,
            **st,
        },
        "machine": machine(),
    }
    print(f"teacher: dev {spec.main_metric} {out['teachers']['teacher']['dev']:.4f}; constant "
          f"prediction {constant:.4f}")  # fmt: skip
    done: dict[str, dict[int, Done]] = {a: {} for a in ARMS}
    for seed in range(args.seeds):  # seed-major: a cut-short run still pairs every arm
        for name, over in ARMS.items():
            done[name][seed] = run_arm(raw, name, over, seed, work, dev, paths)
            out["methods"][name] = method_row(done[name], constant)
            write_json(args.out, out)  # partial results survive an interruption
    out["paired"] = {k: paired_contrast(w, done) for k, w in CONTRASTS.items()}
    return out


def summarize(out: dict[str, Any], path: str | None) -> None:
    title = (
        f"students: GLUE dev {out['metric']}, mean ± std over seeds, "
        f"{out['config']['steps']} steps (teacher dev {out['teachers']['teacher']['dev']:.4f})"
    )
    print_arms(out, title)
    print(f"total {out['total_wall_s']:.0f} s")
    write_json(path, out)


if __name__ == "__main__":
    main()
