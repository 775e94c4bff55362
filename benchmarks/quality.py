"""Student quality per distillation method, same teacher, same step budget, several seeds.

    python benchmarks/quality.py --data-dir ../shared/glue --seeds 3 --out quality.json [--quick]

SST-2 from the GLUE folder; the MiniLM teacher fine-tuned by kdray (`kdray.teacher`, cached
after the first run); a 2-layer `remap` student; methods (a) hard labels only, (b) hard+soft,
(c) hard+soft+hidden+relation. Teacher outputs are computed once for the union of the methods'
needs and shared by every run. Dev (GLUE dev = test) accuracy is reported as mean ± std over
seeds. Targets: teacher dev accuracy >= 0.88; (b) and (c) beat (a).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench_common import machine, parser, print_table, write_json

from kdray.config import TrialConfig
from kdray.teacher import ensure_teacher, teacher_meta
from kdray.trainer import run_trial, setup

METHODS: dict[str, list[str]] = {
    "a_hard": ["hard"],
    "b_hard_soft": ["hard", "soft"],
    "c_hard_soft_hidden_relation": ["hard", "soft", "hidden", "relation"],
}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=None, help="student steps per run")
    p.add_argument("--teacher-steps", type=int, default=None, help="teacher fine-tuning steps")
    args = p.parse_args()
    steps = args.steps or (150 if args.quick else 600)
    seeds = 1 if args.quick and args.seeds == 3 else args.seeds
    base: dict[str, Any] = {
        "data": {"task": "sst2", "data_dir": args.data_dir, "max_length": 64,
                 "max_train_examples": 4000 if args.quick else None},
        "teacher": {"max_steps": args.teacher_steps},
        "student": {"num_layers": 2, "init": "remap"},
        "knowledge": {"types": METHODS["c_hard_soft_hidden_relation"], "temperature": 2.0},
        "trainer": {"max_steps": steps, "batch_size": 32, "learning_rate": 1e-4,
                    "eval_every": max(1, steps // 3), "save_student": False},
        "cache_dir": args.cache_dir,
    }  # fmt: skip
    t0 = time.perf_counter()
    union = TrialConfig.from_dict(base)
    teacher = ensure_teacher(union, progress=True)
    meta = teacher_meta(teacher)
    teacher_dev = meta["test"]["dev"]["accuracy"]
    print(f"teacher {teacher}: dev accuracy {teacher_dev:.4f}")
    shared = setup(union, progress=True).teacher_outputs  # computed once for all methods
    print(f"teacher ready and outputs shared in {time.perf_counter() - t0:.0f} s")

    methods: dict[str, dict[str, Any]] = {}
    rows = []
    for name, types in METHODS.items():
        scores, walls = [], []
        for seed in range(seeds):
            cfg = union.replace(**{"knowledge.types": types, "trainer.seed": seed})
            result = run_trial(cfg, teacher_outputs=shared)
            scores.append(result.test_score)
            walls.append(result.wall_s)
            print(f"  {name} seed {seed}: dev {result.test_score:.4f} ({result.wall_s:.0f} s)")
        entry = {
            "mean": statistics.mean(scores),
            "std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
            "runs": scores,
            "wall_s": statistics.mean(walls),
        }
        methods[name] = entry
        rows.append({"method": name, **{k: v for k, v in entry.items() if k != "runs"}})
    print(f"\nSST-2 dev accuracy, teacher {teacher_dev:.4f}, {steps} student steps, {seeds} seeds")
    print_table(rows, ["method", "mean", "std", "wall_s"])
    a = methods["a_hard"]["mean"]
    checks = {
        "teacher_ge_0.88": teacher_dev >= 0.88,
        "b_beats_a": methods["b_hard_soft"]["mean"] > a,
        "c_beats_a": methods["c_hard_soft_hidden_relation"]["mean"] > a,
    }
    print("targets:", ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in checks.items()))
    write_json(
        args.out,
        {
            "benchmark": "quality",
            "tasks": {"sst2": {"teacher": teacher_dev, "methods": methods}},
            "settings": {"student_steps": steps, "seeds": seeds, "student_layers": 2,
                         "teacher_recipe": meta.get("recipe"), "quick": args.quick},
            "targets": checks,
            "machine": machine(),
        },
    )  # fmt: skip


if __name__ == "__main__":
    main()
