"""Shared plumbing for the benchmark scripts: arguments, a printed table, JSON output."""

from __future__ import annotations

import argparse
import json
import os
import platform
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from kdray.analysis.stats import verdict


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--data-dir",
        default=os.environ.get("KDRAY_GLUE_DIR", str(Path(__file__).parents[2] / "shared/glue")),
        help="GLUE folder (default: $KDRAY_GLUE_DIR, else ../shared/glue)",
    )
    p.add_argument("--out", help="write the results as JSON to this file")
    p.add_argument("--quick", action="store_true", help="a smaller run (a few minutes on 2 CPUs)")
    p.add_argument("--cache-dir", help="kdray cache (default: $KDRAY_CACHE or ~/.cache/kdray)")
    return p


def quiet_hf() -> None:
    """Keep transformers' load reports (an expected new head, ...) out of the tables."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def machine() -> dict[str, Any]:
    return {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    def fmt(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def print_paired(rows: Sequence[dict[str, Any]], title: str = "paired") -> None:
    """The paired comparisons' table: each row a `comparison` name and what
    `kdray.analysis.stats` returned for it (mean, per_seed, ci95, verdict, seeds, examples,
    covers, and examples95: the interval over examples alone, shown with the verdict it gives
    as what the seeds change)."""
    if not rows:
        return
    covers = sorted({str(r.get("covers", "")) for r in rows} - {""})
    print(f"\n{title} (mean of per-seed differences; 95% interval resampling "
          f"{' / '.join(covers) or 'examples'}, the same draws for both sides; beside it the "
          f"interval over examples alone)")  # fmt: skip

    def interval(ci: Sequence[float]) -> str:
        return f"[{ci[0]:+.4f}, {ci[1]:+.4f}]"

    print_table(
        [{**r, "mean": f"{r['mean']:+.4f}", "ci95": interval(r["ci95"]),
          "per_seed": " ".join(f"{d:+.3f}" for d in r.get("per_seed", [])),
          "examples only": interval(r["examples95"]) if "examples95" in r else "",
          "its verdict": verdict(r["examples95"]) if "examples95" in r else ""}
         for r in rows],
        ["comparison", "mean", "ci95", "per_seed", "seeds", "examples", "verdict",
         "examples only", "its verdict"],
    )  # fmt: skip


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        from kdray.base.io import atomic_write_text

        atomic_write_text(Path(path), json.dumps(payload, indent=2) + "\n")
        print(f"wrote {path}")


#: Training states in a trial folder: the run folder's files, Tune's folders holding one.
STATE_FILES = ("checkpoint.pt", "checkpoint.prev.pt")


def folder_bytes(root: Path) -> int:
    """Bytes a folder holds on disk, each file counted once (hard links share their blocks)."""
    seen: set[int] = set()
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_blocks * 512
    return total


def count_states(experiment: Path) -> dict[str, int]:
    """Trial folder -> training states in it now (hard links to one file count once)."""
    counts: dict[str, int] = {}
    for dirpath, _dirs, files in os.walk(experiment):
        inodes = set()
        for name in files:
            if name in STATE_FILES:
                try:
                    inodes.add(os.lstat(os.path.join(dirpath, name)).st_ino)
                except FileNotFoundError:
                    continue
        if inodes:
            rel = Path(dirpath).relative_to(experiment).parts
            if rel:
                counts[rel[0]] = counts.get(rel[0], 0) + len(inodes)
    return counts


class DiskSampler(threading.Thread):
    """Samples a sweep folder every `every` seconds until `done` is set: the peak of its
    bytes on disk, of the training states in it, and of the states in any one trial."""

    def __init__(self, root: Path, every: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.root, self.every = root, every
        self.peak = self.states_peak = self.states_one_trial = self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every):
            if not self.root.exists():
                continue
            states = count_states(self.root)
            self.peak = max(self.peak, folder_bytes(self.root))
            self.states_peak = max(self.states_peak, sum(states.values()))
            self.states_one_trial = max([self.states_one_trial, *states.values()])
            self.samples += 1
