"""The disk a sweep uses: its folder sampled while it runs, and at its end.

    python benchmarks/sweep_disk.py --space search_spaces/quickstart.yaml --out disk.json

Runs the sweep file through `kdray.run_sweep` (a local Ray of this machine's CPUs, the
report included) in a fresh storage folder and samples that folder every --every seconds:

    disk_peak_mb             the sweep folder at its largest (bytes on disk, hard links once)
    states_peak              training states (checkpoint.pt, checkpoint.prev.pt; Tune's
                             checkpoint folders hold the same file name) in it at once
    states_peak_one_trial    the most in one trial folder at once (the aim: at most 2)
    disk_end_mb              the folder at the end, states_left the training states in it
    student_mb               the students kept at the end, together
    best_student_loads       `transformers.pipeline` loads the best trial's student and
                             classifies a sentence
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

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


def main() -> None:
    quiet_hf()
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--space", required=True, help="the sweep file to run")
    p.add_argument("--every", type=float, default=1.0, help="seconds between samples")
    p.add_argument("--keep-folder", action="store_true", help="leave the sweep folder")
    args = p.parse_args()

    import kdray
    from kdray.search.sweep_file import load_spec

    name = load_spec(args.space).name
    storage = Path(tempfile.mkdtemp(prefix="kdray-bench-disk-"))
    sampler = DiskSampler(storage / name, every=args.every)
    sampler.start()
    t0 = time.perf_counter()
    run = kdray.run_sweep(args.space, data_dir=args.data_dir, storage=str(storage), name=name)
    wall = time.perf_counter() - t0
    sampler.done.set()
    sampler.join()
    experiment = Path(run.path)
    students = list(experiment.glob("*/run/student"))
    loads = None
    if run.best_student:
        from transformers import pipeline

        guess = pipeline("text-classification", model=run.best_student)("a gripping film")
        loads = bool(guess and "label" in guess[0])
    out = {
        "benchmark": "sweep_disk",
        "space": args.space,
        "trials": len(run.results),
        "wall_s": wall,
        "samples": sampler.samples,
        "disk_peak_mb": sampler.peak / 2**20,
        "states_peak": sampler.states_peak,
        "states_peak_one_trial": sampler.states_one_trial,
        "disk_end_mb": folder_bytes(experiment) / 2**20,
        "states_left": sum(count_states(experiment).values()),
        "students_kept": len(students),
        "student_mb": sum(folder_bytes(s) for s in students) / 2**20,
        "best_student": run.best_student,
        "best_student_loads": loads,
        "machine": machine(),
    }
    print_table([{"measure": k, "value": v} for k, v in out.items() if k != "machine"],
                ["measure", "value"])  # fmt: skip
    write_json(args.out, out)
    if not args.keep_folder:
        shutil.rmtree(storage, ignore_errors=True)


if __name__ == "__main__":
    main()
