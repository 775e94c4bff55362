"""Shared plumbing for the benchmark scripts: arguments, a printed table, JSON output."""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch


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


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        from kdray.base.io import atomic_write_text

        atomic_write_text(Path(path), json.dumps(payload, indent=2) + "\n")
        print(f"wrote {path}")
