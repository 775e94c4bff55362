"""The code blocks of the README and the Getting-started page run as written, top to bottom,
against a tiny offline config (slow), and every block that cannot run here says why (fast).

A block runs unless the line right above its fence is `<!-- docs-test: skip (REASON) -->`.
Shell blocks run command by command from a scratch folder that sees the repository's
`search_spaces/` and `tests/fixtures/` and a `../shared/glue`, with HOME in a temporary folder
(so `~/kdray_results` is the test's own); `python -m kdray.train` and `kdray.sweep` get
`--set` options that shrink the run (`tiny`: a random hidden-32 backbone in place of MiniLM, a
few steps everywhere). Python blocks run in one subprocess per block, with `kdray.run_trial`
and `kdray.run_sweep` given the same options.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kdray.models.source import random_teacher
from tests.helpers import GLUE

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("README.md", "docs/getting-started.md")
SKIP = re.compile(r"^<!-- docs-test: skip \((.+)\) -->$")
#: Languages of the blocks that run, and of those that only show something.
RUN = {"bash": "shell", "sh": "shell", "shell": "shell", "python": "python"}
SHOWN = {"", "text", "yaml", "json", "toml", "csv"}
#: Commands a runnable shell block may hold (the rest need a skip reason).
RUNNABLE = re.compile(r"^python (-m kdray\.(train|sweep|analyze|export)\b|-c )")
#: A tiny budget: a few steps everywhere (and `tiny` swaps the backbone).
TINY = {
    "data.max_train_examples": 640,
    "data.max_test_examples": 64,
    "data.max_length": 32,
    "teacher.max_steps": 4,
    "teacher.max_train_examples": 64,
    "trainer.max_steps": 8,
    "trainer.eval_every": 2,
    "trainer.batch_size": 8,
    "selector.phase_length": 3,
}
SWEEP = {"sweep.num_samples": 1, "sweep.max_concurrent": 2}


def tiny(backbone: str) -> dict[str, object]:
    """The trial options of a docs run: TINY, teachers fine-tuned from a random hidden-32
    encoder (any label set) instead of MiniLM."""
    return {**TINY, "teacher.backbone": backbone}


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    lang: str
    code: str
    skip: str | None

    def __str__(self) -> str:
        return f"{self.page}:{self.line}"


def blocks(page: str) -> list[Block]:
    """Every fenced block of a page (its language the fence's first word), with its skip
    reason."""
    out: list[Block] = []
    lines = (ROOT / page).read_text().splitlines()
    fences = [i for i, line in enumerate(lines) if line.lstrip().startswith("```")]
    assert len(fences) % 2 == 0, f"{page}: a fence is not closed"
    for start, end in zip(fences[::2], fences[1::2], strict=True):
        lang = (lines[start].lstrip()[3:].split() or [""])[0]
        above = SKIP.match(lines[start - 1].strip()) if start else None
        code = "\n".join(lines[start + 1 : end])
        out.append(Block(page, start + 1, lang, code, above.group(1) if above else None))
    return out


def commands(code: str) -> list[str]:
    """A shell block's commands, continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    split = (shlex.split(line, comments=True) for line in joined.splitlines())
    return [shlex.join(argv) for argv in split if argv]


def every_block() -> list[Block]:
    return [b for page in PAGES for b in blocks(page)]


def test_every_block_runs_or_says_why() -> None:
    found = every_block()
    assert {b.page for b in found} == set(PAGES)
    for b in found:
        assert b.lang in RUN or b.lang in SHOWN, (
            f"{b}: a ```{b.lang} block is neither run nor shown"
        )
        if b.skip is not None:
            assert len(b.skip) > 5, f"{b}: say why the block is skipped"
        elif RUN.get(b.lang) == "shell":
            odd = [c for c in commands(b.code) if not RUNNABLE.match(c)]
            assert not odd, f"{b}: {odd} cannot run in the docs test; mark the block skipped"


def sets(options: dict[str, object], prefix: str = "") -> list[str]:
    return [a for k, v in options.items() for a in ("--set", f"{prefix}{k}={v}")]


def shell_argv(command: str, home: Path, trial: dict[str, object]) -> list[str]:
    """A command's argv: `~` is the test's HOME, python this interpreter, runs shrunk."""
    argv = [home.as_posix() + t[1:] if t.startswith("~") else t for t in shlex.split(command)]
    argv[0] = sys.executable
    if argv[1:3] == ["-m", "kdray.train"]:
        argv += sets(trial)
    if argv[1:3] == ["-m", "kdray.sweep"] and "--resume" not in argv:
        argv += sets(trial, "trial.") + sets(SWEEP)
    return argv


def prelude(trial: dict[str, object]) -> str:
    """Run before each Python block: kdray's entry points with the shrunk options merged in."""
    sweep = {**{"trial." + k: v for k, v in trial.items()}, **SWEEP}
    return f"""
import kdray, kdray.api
_trial, _sweep = kdray.api.run_trial, kdray.api.run_sweep
def run_trial(config=None, overrides=None, **kw):
    return _trial(config, {{**dict(overrides or {{}}), **{trial!r}}}, **kw)
def run_sweep(space=None, *, overrides=None, **kw):
    return _sweep(space, overrides={{**dict(overrides or {{}}), **{sweep!r}}}, **kw)
kdray.run_trial, kdray.run_sweep = run_trial, run_sweep
"""


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: str) -> str:
    return random_teacher(tmp_path_factory.mktemp("tiny-backbone"), tokenizer_dir, None)


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """(a folder laid out like a checkout beside ../shared, the environment to run in)."""
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    for name in ("search_spaces", "tests"):
        (work / name).symlink_to(ROOT / name)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "glue").symlink_to(GLUE)
    # Ray's own temp folder: short (its socket paths must stay under 108 bytes), removed after
    with tempfile.TemporaryDirectory(prefix="kd", dir="/tmp", ignore_cleanup_errors=True) as ray:
        yield (
            work,
            {
                **os.environ,
                "HOME": str(home),
                "HF_HUB_OFFLINE": "1",
                "RAY_TMPDIR": ray,
                "KDRAY_CACHE": os.environ.get("KDRAY_CACHE") or str(tmp_path / "cache"),
                "PYTHONPATH": str(ROOT),
            },
        )


@pytest.mark.slow
def test_the_pages_blocks_run(
    scratch: tuple[Path, dict[str, str]], tiny_backbone: str, glue_dir: Path
) -> None:
    """The README's blocks, then Getting started's, in one scratch folder as one reader would
    run them; a command the README already ran, word for word, is not run again."""
    work, env = scratch
    home, trial = Path(env["HOME"]), tiny(tiny_backbone)
    ran: dict[str, Block] = {}
    for b in every_block():
        if b.skip is not None or b.lang not in RUN:
            continue
        if RUN[b.lang] == "python":
            runs = [[sys.executable, "-c", prelude(trial) + b.code]]
        else:
            runs = [shell_argv(c, home, trial) for c in commands(b.code)]
        for argv in runs:
            if shlex.join(argv) in ran:
                continue
            proc = subprocess.run(
                argv, cwd=work, env=env, capture_output=True, text=True, timeout=900
            )
            assert proc.returncode == 0, (
                f"{b} `{shlex.join(argv)[:300]}` exited {proc.returncode}:\n"
                f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
            )
            ran[shlex.join(argv)] = b
    assert {b.page for b in ran.values()} == set(PAGES)
