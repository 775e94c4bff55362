"""Student forward latency and throughput by attention-head count (MLKD-BERT).

    python benchmarks/latency.py --out latency.json [--quick] [--threads N] [--device cuda]

A 2-layer student at the teacher's width (all-MiniLM-L6-v2: 384 wide, intermediate 1536, 12
heads), built by kdray's `build_student` with 12, 6, 4, 3, 2 or 1 heads (random init: latency
does not depend on the weights), timed on random token ids for batch {1, 8, 32, 64} x length
{64, 128}, with eager attention and with PyTorch's SDPA. Each cell: `--warmup` untimed forward
passes, then the median of `--runs` timed ones, in inference mode, the CPU threads pinned to
`--threads` (default: every core torch sees); on CUDA each run is synchronised. Within a
cell the head counts take turns run by run, so drift of the machine hits every head count
alike.

JSON: {"cells": [{"heads", "batch", "length", "attn", "median_ms", "examples_per_s"}],
"speedup_12_to_3": {"batch64_len128": float, ...} (SDPA: 12-head median / 3-head median),
"speedup_12_to_3_eager": {...}, "machine", "config"}.

At a fixed width, fewer heads do not change the projections' or the score matmuls' FLOPs
(QKᵀ costs T²·d whatever the split); they change the softmax and the per-head overheads
(h·T² elements, h kernel launches). The speed-up is therefore expected to be modest, largest at
long sequences and small batches; the table says how much at this machine.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from bench_common import machine, parser, print_table, quiet_hf, write_json
from transformers import AutoConfig

from kdray.config import DEFAULT_BACKBONE, StudentConfig
from kdray.data.tasks import TASKS
from kdray.models.classifier import build_student
from kdray.models.source import resolve_backbone

HEADS = (12, 6, 4, 3, 2, 1)
BATCHES = (1, 8, 32, 64)
LENGTHS = (64, 128)
ATTNS = ("eager", "sdpa")


def student(teacher_config: Any, heads: int, attn: str, device: torch.device) -> torch.nn.Module:
    cfg = StudentConfig(num_layers=2, num_heads=heads, init="random", dropout=0.0)
    model = build_student(cfg, teacher_config, TASKS["sst2"], eager=attn == "eager")
    return model.to(device).eval()


def time_heads(
    models: dict[int, torch.nn.Module], batch: dict[str, torch.Tensor], warmup: int, runs: int
) -> dict[int, float]:
    """Median milliseconds of one forward pass per head count. The head counts take turns run
    by run (12, 6, ..., 1, 12, 6, ...), so the machine's drift and its neighbours' bursts hit
    every head count alike instead of whichever was timed at that moment."""
    cuda = batch["input_ids"].is_cuda
    times: dict[int, list[float]] = {h: [] for h in models}
    with torch.inference_mode():
        for i in range(warmup + runs):
            for h, model in models.items():
                if cuda:
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                model(**batch)
                if cuda:
                    torch.cuda.synchronize()
                if i >= warmup:
                    times[h].append((time.perf_counter() - t0) * 1000)
    return {h: statistics.median(t) for h, t in times.items()}


def speedups(cells: list[dict[str, Any]], attn: str) -> dict[str, float]:
    ms = {(c["heads"], c["batch"], c["length"]): c["median_ms"] for c in cells if c["attn"] == attn}
    return {
        f"batch{b}_len{n}": ms[(12, b, n)] / ms[(3, b, n)]
        for b in BATCHES
        for n in LENGTHS
        if (12, b, n) in ms and (3, b, n) in ms
    }


def main() -> None:
    quiet_hf()
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--runs", type=int, default=None, help="timed runs per cell (default 20, --quick 5)"
    )
    p.add_argument("--warmup", type=int, default=None, help="untimed runs (default 5, --quick 2)")
    args = p.parse_args()
    runs = args.runs or (5 if args.quick else 20)
    warmup = args.warmup or (2 if args.quick else 5)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    teacher_config = AutoConfig.from_pretrained(resolve_backbone(DEFAULT_BACKBONE))
    models = {(h, a): student(teacher_config, h, a, device) for h in HEADS for a in ATTNS}
    cells: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for attn in ATTNS:
        for length in LENGTHS:
            for b in BATCHES:
                ids = torch.randint(1000, teacher_config.vocab_size, (b, length), device=device)
                batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
                ms = time_heads({h: models[(h, attn)] for h in HEADS}, batch, warmup, runs)
                cells += [
                    {"heads": h, "batch": b, "length": length, "attn": attn,
                     "median_ms": ms[h], "examples_per_s": b / ms[h] * 1000}
                    for h in HEADS
                ]  # fmt: skip
                done = ", ".join(
                    f"{c['heads']}h {c['median_ms']:.2f} ms" for c in cells[-len(HEADS) :]
                )
                print(f"  {attn} length {length} batch {b}: {done}", flush=True)
    out = {
        "benchmark": "latency",
        "cells": cells,
        "speedup_12_to_3": speedups(cells, "sdpa"),
        "speedup_12_to_3_eager": speedups(cells, "eager"),
        "machine": machine(),  # after set_num_threads: the threads the cells ran with
        "config": {"student_layers": 2, "width": teacher_config.hidden_size, "heads": HEADS,
                   "batches": BATCHES, "lengths": LENGTHS, "runs": runs, "warmup": warmup,
                   "quick": args.quick},
        "wall_s": time.perf_counter() - t_start,
    }  # fmt: skip
    rows = []
    for attn in ATTNS:
        for length in LENGTHS:
            for b in BATCHES:
                row: dict[str, Any] = {"attn": attn, "length": length, "batch": b}
                for c in cells:
                    if (c["attn"], c["length"], c["batch"]) == (attn, length, b):
                        row[f"{c['heads']}h ms"] = c["median_ms"]
                row["12->3 speed-up"] = row["12h ms"] / row["3h ms"]
                rows.append(row)
    print_table(rows, ["attn", "length", "batch", *[f"{h}h ms" for h in HEADS], "12->3 speed-up"])
    write_json(args.out, out)


if __name__ == "__main__":
    main()
