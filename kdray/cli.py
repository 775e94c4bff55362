"""Shared command-line plumbing: --config and --set arguments, and clean exits on user errors."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from kdray.base.errors import KdrayError


def add_common(parser: argparse.ArgumentParser) -> None:
    """The options every trial command line takes: --config, --data-dir and --set."""
    parser.add_argument("--config", help="YAML trial config (sections data, teacher, ...)")
    parser.add_argument(
        "--data-dir",
        help="GLUE folder in the classic TSV layout (default: $KDRAY_GLUE_DIR, else the hub)",
    )
    add_set(parser, "override one config value, e.g. --set trainer.max_steps=100")


def add_set(parser: argparse.ArgumentParser, help: str) -> None:
    """--set KEY=VALUE (repeatable) into args.overrides; read with `parse_override`."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"{help} (repeatable)",
    )


def run_cli(main: Callable[[], int | None]) -> None:
    """Run `main`; a KdrayError becomes one line on stderr and exit code 2, no traceback."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "filelock", "datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    quiet_transformers()
    try:
        code = main()
    except KdrayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(
            "interrupted; rerun the same command to resume from the last checkpoint",
            file=sys.stderr,
        )
        sys.exit(130)
    sys.exit(code or 0)


def quiet_transformers() -> None:
    """transformers' errors only (weight-init notices for a new student head are expected) and
    no progress bars of its own. Through the environment when transformers is not imported
    yet (so a command that never needs it, or fails on bad input, does not import it for
    this; Ray workers started from here inherit it), else through its logging module."""
    if "transformers" not in sys.modules:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        return
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
