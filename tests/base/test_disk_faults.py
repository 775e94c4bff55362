"""Disk faults: file modes under the umask, a full disk while checkpointing or
writing results, and unreadable checkpoints on resume (the previous one is kept for that)."""

from __future__ import annotations

import errno
import logging
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import kdray.base.io
from kdray.base.errors import ConfigError, KdrayError, WriteError
from kdray.base.io import atomic_dir, atomic_path, atomic_torch_save, atomic_write_text, umask
from kdray.base.results import CHECKPOINT, PREV_CHECKPOINT, RESULTS
from kdray.cli import run_cli
from kdray.config import TrialConfig
from kdray.training import checkpoint
from kdray.training.trainer import distil
from tests.helpers import REPO

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def leftovers(folder: Path) -> list[str]:
    """Temporary files an atomic write left behind (all start with a dot)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def set_umask() -> Iterator[Any]:
    """set_umask(mask): the process umask for this test, restored after it."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


# ------------------------------------------------------------------------------ file modes


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"),
                         [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])  # fmt: skip
def test_atomic_writes_get_the_modes_of_plain_open_and_mkdir(
    tmp_path: Path, set_umask: Any, mask: int, file_mode: int, dir_mode: int
) -> None:
    set_umask(mask)
    assert umask() == mask
    atomic_write_text(tmp_path / "report.md", "hi")
    atomic_torch_save({"x": torch.zeros(2)}, tmp_path / "state.pt")
    with atomic_dir(tmp_path / "student") as d:
        (d / "config.json").write_text("{}")
    assert mode(tmp_path / "report.md") == file_mode
    assert mode(tmp_path / "state.pt") == file_mode
    assert mode(tmp_path / "student") == dir_mode
    assert mode(tmp_path / "student" / "config.json") == file_mode


def test_umask_without_proc_is_read_and_restored(
    set_umask: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where /proc/self/status is missing, os.umask reads it and puts it back."""
    set_umask(0o027)

    def no_proc(*args: Any, **kwargs: Any) -> Any:
        raise FileNotFoundError(errno.ENOENT, "no /proc")

    monkeypatch.setattr(kdray.base.io, "open", no_proc, raising=False)
    assert umask() == 0o027
    monkeypatch.undo()
    assert umask() == 0o027


# ------------------------------------------------------------------------- write errors


def test_write_error_in_the_block_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / RESULTS
    atomic_write_text(path, "old")
    with pytest.raises(WriteError) as err, atomic_path(path) as tmp:
        tmp.write_text("half")
        raise ENOSPC
    msg = str(err.value)
    assert str(path) in msg and "No space left on device (ENOSPC)" in msg
    assert "previous results.json is kept" in msg and "free space" in msg
    assert "rerun the same command to resume" in msg and "\n" not in msg
    assert isinstance(err.value.__cause__, OSError) and not isinstance(err.value, OSError)
    assert path.read_text() == "old" and leftovers(tmp_path) == []


def test_write_error_at_the_rename_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.pt"
    atomic_torch_save({"step": 1}, path)

    def full(src: Any, dst: Any) -> None:
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), str(src))

    monkeypatch.setattr(kdray.base.io.os, "replace", full)
    with pytest.raises(WriteError, match=r"state\.pt: .*\(EDQUOT\); the previous state\.pt"):
        atomic_torch_save({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1} and leftovers(tmp_path) == []


def test_write_error_in_a_folder_keeps_the_previous_folder(tmp_path: Path) -> None:
    final = tmp_path / "student"
    with atomic_dir(final) as d:
        (d / "w").write_text("old")
    with pytest.raises(WriteError, match="previous student is kept"), atomic_dir(final) as d:
        (d / "w").write_text("new")
        raise ENOSPC
    assert (final / "w").read_text() == "old" and leftovers(tmp_path) == []


def test_a_write_error_is_one_line_and_exit_2_in_a_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def main() -> int:
        with atomic_path(tmp_path / RESULTS):
            raise ENOSPC

    with pytest.raises(SystemExit) as done:
        run_cli(main)
    assert done.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: could not write") and "ENOSPC" in err[0]


def full_at(call: int, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.save writes some bytes, then fails with ENOSPC at its `call`-th write of a
    temporary file of `name` (earlier ones, and other files, are written as usual)."""
    real = torch.save
    calls = [0]

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        if f"/.{name}." in str(getattr(f, "name", f)):
            calls[0] += 1
            if calls[0] == call:
                f.write(b"PK\x03\x04 half a checkpoint")
                raise ENOSPC
        real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


def test_disk_full_at_the_second_checkpoint_keeps_the_first(
    tiny_cfg: dict, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = TrialConfig.from_dict(tiny_cfg)  # checkpoints at steps 5 and 10
    run = Path(tiny_cfg["trainer"]["output_dir"])
    full_at(2, CHECKPOINT, monkeypatch)
    with pytest.raises(WriteError) as err:
        distil(cfg)
    msg = str(err.value)
    assert str(run / CHECKPOINT) in msg and "No space left on device (ENOSPC)" in msg
    assert "previous checkpoint.pt is kept" in msg and "rerun the same command" in msg
    assert torch.load(run / CHECKPOINT, weights_only=True)["step"] == 5
    assert leftovers(run) == []
    monkeypatch.undo()
    with caplog.at_level(logging.INFO, logger="kdray.training.checkpoint"):
        result = distil(cfg)
    assert "step 5" in caplog.text and result.status == "finished" and result.steps == 10


def test_disk_full_writing_results_names_it_and_a_rerun_writes_them(
    tiny_cfg: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = TrialConfig.from_dict(tiny_cfg)
    run = Path(tiny_cfg["trainer"]["output_dir"])
    real = Path.write_text

    def write_text(self: Path, data: str, *args: Any, **kwargs: Any) -> int:
        if self.name.startswith(f".{RESULTS}."):
            real(self, data[:10])
            raise ENOSPC
        return real(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    with pytest.raises(WriteError, match=rf"{RESULTS}: No space left on device \(ENOSPC\)"):
        distil(cfg)
    assert not (run / RESULTS).exists() and leftovers(run) == []
    monkeypatch.undo()
    result = distil(cfg)  # resumes from the last checkpoint and only finishes
    assert result.status == "finished" and result.steps == 10 and (run / RESULTS).is_file()


# ----------------------------------------------------------------- rotation of checkpoints


def fake_state(cfg: TrialConfig, step: int) -> dict[str, Any]:
    """A checkpoint with every key a resume reads (values beside the point here)."""
    state: dict[str, Any] = dict.fromkeys(checkpoint.STATE_KEYS)
    return {**state, "config": cfg.to_dict(), "step": step, "w": torch.full((4,), step)}


@pytest.fixture
def cfg(tmp_path: Path) -> TrialConfig:
    return TrialConfig().replace(**{"trainer.output_dir": str(tmp_path / "run")})


def steps(out: Path) -> tuple[int | None, ...]:
    return tuple(
        torch.load(out / n, weights_only=True)["step"] if (out / n).exists() else None
        for n in (CHECKPOINT, PREV_CHECKPOINT)
    )


def test_save_keeps_the_previous_checkpoint(cfg: TrialConfig, tmp_path: Path) -> None:
    out = tmp_path / "run"
    checkpoint.save(fake_state(cfg, 5), out)
    assert steps(out) == (5, None)
    checkpoint.save(fake_state(cfg, 10), out)
    checkpoint.save(fake_state(cfg, 15), out)
    assert steps(out) == (15, 10) and leftovers(out) == []


@pytest.mark.parametrize("no_links", [False, True])
@pytest.mark.parametrize("crash_at", ["keep", "replace"])
def test_a_crash_inside_the_rotation_leaves_a_readable_checkpoint(
    cfg: TrialConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_at: str,
    no_links: bool,
) -> None:  # fmt: skip
    """Killed while keeping the previous checkpoint, or just before the new one is renamed
    into place (also on a filesystem without hard links): the old state is loaded."""
    out = tmp_path / "run"
    checkpoint.save(fake_state(cfg, 5), out)
    checkpoint.save(fake_state(cfg, 10), out)
    real = os.replace

    def killed(src: Any, dst: Any) -> None:
        if Path(dst).name == (PREV_CHECKPOINT if crash_at == "keep" else CHECKPOINT):
            raise KeyboardInterrupt
        real(src, dst)

    def no_link(src: Any, dst: Any) -> None:
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(kdray.base.io.os, "replace", killed)
    if no_links:
        monkeypatch.setattr(kdray.base.io.os, "link", no_link)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(fake_state(cfg, 15), out)
    monkeypatch.undo()
    assert steps(out) == ((10, 5) if crash_at == "keep" else (10, 10))
    assert leftovers(out) == []
    state = checkpoint.load(out, cfg, allow_mutation=False)
    assert state is not None and state["step"] == 10


def test_install_rotates_and_skips_the_same_file(cfg: TrialConfig, tmp_path: Path) -> None:
    out = tmp_path / "run"
    checkpoint.save(fake_state(cfg, 5), out)
    checkpoint.save(fake_state(cfg, 10), out)
    src = tmp_path / "tune" / CHECKPOINT
    atomic_torch_save(fake_state(cfg, 20), src)
    checkpoint.install(src, out)
    assert steps(out) == (20, 10)
    checkpoint.install(src, out)  # Tune hands back the checkpoint the folder holds
    assert steps(out) == (20, 10) and leftovers(out) == []
    checkpoint.install(src, tmp_path / "fresh")
    assert steps(tmp_path / "fresh") == (20, None)


# ------------------------------------------------------------------ unreadable checkpoints


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


CORRUPTIONS = {
    "truncated": (truncate, "not a complete checkpoint"),
    "empty": (lambda p: p.write_bytes(b""), "empty"),
    "garbage": (lambda p: p.write_bytes(os.urandom(4096)), "not a complete checkpoint"),
    "not a dict": (lambda p: torch.save([1, 2], p), "holds a list"),
    "missing keys": (lambda p: torch.save({"config": {}, "step": 3}, p), "incomplete: no stage"),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_an_unreadable_checkpoint_falls_back_to_the_previous(
    cfg: TrialConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    out = tmp_path / "run"
    checkpoint.save(fake_state(cfg, 5), out)
    checkpoint.save(fake_state(cfg, 10), out)
    corrupt, reason = CORRUPTIONS[kind]
    corrupt(out / CHECKPOINT)
    with caplog.at_level(logging.WARNING, logger="kdray.training.checkpoint"):
        checkpoint.check_output_dir(cfg)
        state = checkpoint.load(out, cfg, allow_mutation=False)
    assert state is not None and state["step"] == 5
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and str(out / CHECKPOINT) in warned[0] and reason in warned[0]
    assert str(out / PREV_CHECKPOINT) in warned[0]
    assert steps(out) == (5, 5)  # the unreadable file replaced: the next save keeps a good one
    checkpoint.save(fake_state(cfg, 10), out)
    assert steps(out) == (10, 5)


def test_no_readable_checkpoint_says_how_to_start_over(cfg: TrialConfig, tmp_path: Path) -> None:
    out = tmp_path / "run"
    checkpoint.save(fake_state(cfg, 5), out)
    checkpoint.save(fake_state(cfg, 10), out)
    truncate(out / CHECKPOINT)
    (out / PREV_CHECKPOINT).write_bytes(os.urandom(1000))
    for check in (
        lambda: checkpoint.check_output_dir(cfg),
        lambda: checkpoint.load(out, cfg, False),
    ):
        with pytest.raises(ConfigError) as err:
            check()
        msg = str(err.value)
        assert str(out / CHECKPOINT) in msg and str(out / PREV_CHECKPOINT) in msg
        assert "not a complete checkpoint" in msg and "to start this run over, delete" in msg
        assert "fresh trainer.output_dir" in msg and "\n" not in msg
        assert err.value.__context__ is None and err.value.__cause__ is None
    (out / PREV_CHECKPOINT).unlink()
    with pytest.raises(ConfigError, match=rf"delete {out / CHECKPOINT} \(or use"):
        checkpoint.check_output_dir(cfg)


def test_a_missing_checkpoint_with_a_previous_one_resumes_from_it(
    cfg: TrialConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "run"
    checkpoint.save(fake_state(cfg, 5), out)
    checkpoint.save(fake_state(cfg, 10), out)
    (out / CHECKPOINT).unlink()
    state = checkpoint.load(out, cfg, allow_mutation=False)
    assert state is not None and state["step"] == 5 and "missing" in caplog.text


def test_a_run_resumes_from_the_previous_checkpoint_when_the_last_is_truncated(
    tiny_cfg: dict, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = TrialConfig.from_dict(tiny_cfg)
    run = Path(tiny_cfg["trainer"]["output_dir"])
    whole = distil(cfg)  # checkpoints at steps 5 and 10
    assert steps(run)[1] == 5
    final = torch.load(run / CHECKPOINT, weights_only=True)["student"]
    truncate(run / CHECKPOINT)
    with caplog.at_level(logging.WARNING, logger="kdray.training.checkpoint"):
        resumed = distil(cfg)
    assert str(run / CHECKPOINT) in caplog.text and "cannot be read" in caplog.text
    assert resumed.steps == 10 and resumed.test == whole.test
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in whole.history]
    again = torch.load(run / CHECKPOINT, weights_only=True)["student"]
    assert all(torch.equal(final[k], again[k]) for k in final)


def test_train_cli_on_unreadable_checkpoints_exits_2_with_one_line(
    tiny_cfg: dict, tmp_path: Path
) -> None:
    import yaml

    run = Path(tiny_cfg["trainer"]["output_dir"])
    run.mkdir()
    (run / CHECKPOINT).write_bytes(b"PK\x03\x04 truncated")
    (run / PREV_CHECKPOINT).write_bytes(b"")
    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump(tiny_cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "kdray.train", "--config", str(path)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert str(run / CHECKPOINT) in lines[0] and "delete" in lines[0]
    assert "Traceback" not in proc.stderr and "Unpickl" not in proc.stderr


def test_write_error_is_a_kdray_error() -> None:
    assert issubclass(WriteError, KdrayError) and not issubclass(WriteError, OSError)
