"""One run end to end on tiny models and real SST-2: reports, resume, divergence, teacher cache."""

from __future__ import annotations

import itertools
import json
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from kdray.base.errors import ConfigError, DataError
from kdray.config import TrialConfig
from kdray.knowledge import KNOWLEDGE_TYPES
from kdray.models.classifier import encode, load_classifier
from kdray.teachers.outputs import compute_teacher_outputs
from kdray.training.trainer import CHECKPOINT, RESULTS, ListReporter, Run, distil, setup
from tests.helpers import CrashAtFirstReport


def cfg_of(raw: dict[str, Any], **paths: Any) -> TrialConfig:
    return TrialConfig.from_dict(raw).replace(**paths)


def test_run_reports_each_eval_and_writes_results(tiny_cfg: dict) -> None:
    rep = ListReporter()
    result = distil(TrialConfig.from_dict(tiny_cfg), rep)
    assert result.status == "finished" and result.steps == 10
    assert [r["step"] for r in rep.results] == [5, 10]
    assert rep.results[-1]["done"] and not rep.results[0]["done"]
    assert 0 <= rep.results[-1]["test_metric"] <= 1
    assert set(result.test) == {"dev"} and "accuracy" in result.test["dev"]
    saved = json.loads((Path(result.output_dir) / RESULTS).read_text())
    assert saved["status"] == "finished" and saved["test"] == result.test
    assert result.teacher_cache == "cached"


def test_resume_continues_exactly(tiny_cfg: dict, tmp_path: Path) -> None:
    whole = distil(cfg_of(tiny_cfg, **{"trainer.output_dir": str(tmp_path / "a")}))

    cfg_b = cfg_of(tiny_cfg, **{"trainer.output_dir": str(tmp_path / "b")})
    with pytest.raises(KeyboardInterrupt):
        distil(cfg_b, CrashAtFirstReport())
    assert torch.load(tmp_path / "b" / CHECKPOINT, weights_only=True)["step"] == 5
    resumed = distil(cfg_b)
    assert resumed.steps == 10
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in whole.history]
    a = torch.load(tmp_path / "a" / CHECKPOINT, weights_only=True)["student"]
    b = torch.load(tmp_path / "b" / CHECKPOINT, weights_only=True)["student"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_under_changed_knobs_only_for_mutable_paths(tiny_cfg: dict, tmp_path: Path) -> None:
    """PBT continues a checkpoint with other temperature / weights / agent rates, nothing else."""
    base = {"trainer.output_dir": str(tmp_path / "r"), "selector.kind": "acks",
            "data.reward_fraction": 0.1, "selector.reward_examples": 32}  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        distil(cfg_of(tiny_cfg, **base), CrashAtFirstReport())
    changed = {"knowledge.temperature": 3.0, "knowledge.weights": {"hidden": 0.5},
               "selector.actor_lr": 0.05}  # fmt: skip
    with pytest.raises(ConfigError, match=r"differs in knowledge\.temperature, knowledge\.weights"):
        distil(cfg_of(tiny_cfg, **base, **changed))
    with pytest.raises(ConfigError, match=r"trainer\.learning_rate"):
        distil(cfg_of(tiny_cfg, **base, **{"trainer.learning_rate": 0.01}), allow_mutation=True)
    s = setup(cfg_of(tiny_cfg, **base, **changed))
    run = Run(s, None, progress=False, allow_mutation=True)
    assert run.restore() and run.step == 5
    assert run.static["hidden"] == 0.5
    assert [g["lr"] for g in run.selector.actor_opt.param_groups] == [0.05]  # type: ignore[attr-defined]
    assert run.run().status == "finished"


def test_a_clone_of_a_finished_run_ends_with_results(tiny_cfg: dict, tmp_path: Path) -> None:
    """PBT may clone a donor's last checkpoint (its final step) into another trial's folder
    and change its knobs: that trial has nothing left to train, and still ends with its own
    test score, results.json and final report, continuing the donor's phase log."""
    from kdray.training.checkpoint import install

    donor = distil(cfg_of(tiny_cfg, **{"trainer.output_dir": str(tmp_path / "donor")}))
    clone_dir = tmp_path / "clone"
    clone_dir.mkdir()
    install(tmp_path / "donor" / CHECKPOINT, clone_dir)
    rep = ListReporter()
    clone = distil(cfg_of(tiny_cfg, **{"trainer.output_dir": str(clone_dir),
                                          "knowledge.temperature": 3.0}),
                      rep, allow_mutation=True)  # fmt: skip
    assert clone.status == "finished" and clone.steps == donor.steps
    assert clone.test == donor.test  # the donor's student, evaluated again
    assert json.loads((clone_dir / RESULTS).read_text())["status"] == "finished"
    assert [r["done"] for r in rep.results] == [True]
    assert rep.results[0]["resumed_from_step"] == donor.steps


def test_non_finite_loss_ends_run_as_diverged(
    tiny_cfg: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        KNOWLEDGE_TYPES["soft"], "loss", lambda self, s, t, b: torch.tensor(float("nan"))
    )
    rep = ListReporter()
    result = distil(TrialConfig.from_dict(tiny_cfg), rep)
    assert result.status == "diverged" and result.steps == 0
    assert rep.results[-1]["status"] == "diverged" and rep.results[-1]["done"]


def test_zero_weight_knowledge_is_not_computed(tiny_cfg: dict, count_losses) -> None:  # type: ignore[no-untyped-def]
    calls = count_losses(["soft", "hidden"])
    distil(cfg_of(tiny_cfg, **{"knowledge.weights": {"soft": 0.0}}))
    assert calls == {"soft": 0, "hidden": 10}


def test_cached_and_live_teacher_give_the_same_losses(tiny_cfg: dict, tmp_path: Path) -> None:
    all_types = sorted(KNOWLEDGE_TYPES)
    base = {"knowledge.types": all_types, "student.num_layers": 2}
    cached = distil(cfg_of(tiny_cfg, **base, **{"trainer.output_dir": str(tmp_path / "c")}))
    live = distil(
        cfg_of(
            tiny_cfg,
            **base,
            **{"trainer.output_dir": str(tmp_path / "l"), "trainer.teacher_cache": False},
        )
    )
    assert cached.teacher_cache == "cached" and live.teacher_cache == "off"
    for c, l_ in zip(cached.history, live.history, strict=True):
        assert c["train_loss"] == pytest.approx(l_["train_loss"], rel=2e-3)


def test_teacher_outputs_gather_equals_live_forward(tiny_cfg: dict) -> None:
    s = setup(
        cfg_of(tiny_cfg, **{"knowledge.types": sorted(KNOWLEDGE_TYPES), "student.num_layers": 2})
    )
    teacher = load_classifier(s.teachers[0].path, eager=True).eval()
    needs = s.teacher_needs(0, s.types)
    out = compute_teacher_outputs(teacher, s.data.train, needs, batch_size=16)
    idx = torch.tensor([3, 0, 17, 250])
    batch = s.data.train.batch(idx)
    with torch.no_grad():
        live = encode(teacher, batch, needs)
    got = out.features(idx)
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(got.logits, live.logits, rtol=1e-4, atol=1e-4)
    for layer, h in live.hidden.items():
        torch.testing.assert_close(got.hidden[layer][mask], h[mask], rtol=2e-3, atol=2e-3)
    for layer, c in live.attn_context.items():
        torch.testing.assert_close(got.attn_context[layer][mask], c[mask], rtol=2e-3, atol=2e-3)
    pairs = (mask[:, :, None] & mask[:, None, :]).unsqueeze(1).expand_as(live.attn_probs[1])
    for layer, p in live.attn_probs.items():
        torch.testing.assert_close(got.attn_probs[layer][pairs], p[pairs], rtol=2e-3, atol=2e-3)


def test_teacher_outputs_pickle_out_of_band_and_are_read_in_place(tiny_cfg: dict) -> None:
    """Ray's object store pickles a sweep's shared outputs with protocol 5: every tensor goes
    out of band, and the unpickled tensors are views of those buffers (no copy per trial)."""
    cfg = cfg_of(tiny_cfg, **{"knowledge.types": sorted(KNOWLEDGE_TYPES), "student.num_layers": 2})
    out = setup(cfg).teachers[0].outputs
    assert out is not None and out.hidden and out.attn_probs
    buffers: list[pickle.PickleBuffer] = []
    blob = pickle.dumps(out, protocol=5, buffer_callback=buffers.append)
    assert len(blob) < 2000 and sum(b.raw().nbytes for b in buffers) >= out.nbytes
    back = pickle.loads(blob, buffers=buffers)
    state, state_back = out.to_state(), back.to_state()
    assert state.keys() == state_back.keys()
    for key in state:
        assert torch.equal(state[key], state_back[key]), key
        assert state[key].dtype == state_back[key].dtype, key
    in_buffers = {np.frombuffer(b.raw(), dtype=np.uint8).ctypes.data for b in buffers}
    stored = [t for k, t in state_back.items() if k not in ("heads", "fingerprint")]
    assert {t.data_ptr() for t in stored} <= in_buffers  # (both rebuilt by to_state)
    idx = torch.tensor([3, 0, 17])
    assert torch.equal(back.features(idx).logits, out.features(idx).logits)


def test_over_budget_falls_back_to_live_teacher(tiny_cfg: dict) -> None:
    result = distil(cfg_of(tiny_cfg, **{"trainer.teacher_cache_max_mb": 0}))
    assert result.status == "finished" and result.teacher_cache == "live (over budget)"


def test_fine_tuning_needs_no_teacher(tiny_cfg: dict) -> None:
    result = distil(cfg_of(tiny_cfg, **{"knowledge.types": ["hard"], "student.init": "random"}))
    assert result.status == "finished" and result.teacher_cache == "off"


def test_distilbert_student(tiny_cfg: dict) -> None:
    raw = {**tiny_cfg, "student": {"architecture": "distilbert", "num_layers": 2, "init": "random"}}
    assert distil(TrialConfig.from_dict(raw)).status == "finished"


def test_attention_with_other_head_count_points_to_attention_relation(tiny_cfg: dict) -> None:
    with pytest.raises(ConfigError, match="attention_relation"):
        setup(
            cfg_of(tiny_cfg, **{"knowledge.types": ["hard", "attention"], "student.num_heads": 2})
        )


def test_missing_glue_folder_is_a_data_error(tiny_cfg: dict, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="KDRAY_GLUE_DIR"):
        setup(cfg_of(tiny_cfg, **{"data.data_dir": str(tmp_path / "no-glue")}))


# --------------------------------------------------------------------------------------- CLI


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kdray.train", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_cli_bad_input_exits_2_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  max_step: 10\n")
    proc = run_cli("--config", str(bad), cwd=tmp_path)
    assert proc.returncode == 2
    assert (
        proc.stderr.strip().splitlines() == [proc.stderr.strip().splitlines()[0]]
        and "did you mean 'max_steps'" in proc.stderr
    )
    assert "Traceback" not in proc.stderr

    broken = tmp_path / "broken.yaml"
    broken.write_text("trainer:\n  max_steps: [1,\n")
    proc = run_cli("--config", str(broken), cwd=tmp_path)
    assert proc.returncode == 2 and "line 3" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_runs_a_trial(tiny_cfg: dict, tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump(tiny_cfg))
    proc = run_cli("--config", str(path), "--set", "trainer.max_steps=5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "test (dev) accuracy:" in proc.stdout and "status: finished after 5 steps" in proc.stdout


def test_shared_teacher_outputs_of_other_data_are_refused(tiny_cfg: dict) -> None:
    shared = setup(TrialConfig.from_dict(tiny_cfg)).teachers[0].outputs
    assert shared is not None
    other = cfg_of(tiny_cfg, **{"data.split_seed": 1})  # same sizes, other examples
    with pytest.raises(ConfigError, match="other training data"):
        distil(other, teacher_outputs=shared)
    assert distil(TrialConfig.from_dict(tiny_cfg), teacher_outputs=shared).status == "finished"


def test_same_seed_gives_the_same_random_student(tiny_cfg: dict, tmp_path: Path) -> None:
    def run(name: str) -> dict:
        cfg = cfg_of(
            tiny_cfg, **{"student.init": "random", "trainer.output_dir": str(tmp_path / name)}
        )
        return distil(cfg).history[-1]

    assert run("a") == run("b")


def test_progress_bar_says_what_it_trains(tiny_cfg: dict, capsys: pytest.CaptureFixture) -> None:
    """A distillation's bar says `distil`; a caller's label replaces it (the teacher's
    fine-tune says `teacher fine-tune`)."""
    tiny_cfg["trainer"] = {**tiny_cfg["trainer"], "max_steps": 2, "eval_every": 2}
    distil(TrialConfig.from_dict(tiny_cfg), progress=True)
    assert "distil" in capsys.readouterr().err
    tiny_cfg["trainer"]["output_dir"] += "-labelled"
    distil(TrialConfig.from_dict(tiny_cfg), progress=True, label="teacher fine-tune")
    err = capsys.readouterr().err
    assert "teacher fine-tune" in err and "distil" not in err


def test_eval_batches_cover_every_row_with_little_padding(tiny_cfg: dict) -> None:
    from kdray.training.loop import EVAL_PADDING_SLACK, eval_batches, predict

    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(2, 64, (1000,), generator=gen).sort(descending=True).values
    batches = eval_batches(lengths, 128)
    assert batches[0][0] == 0 and batches[-1][1] == 1000
    assert all(a[1] == b[0] for a, b in itertools.pairwise(batches))
    for start, end in batches:
        rows = end - start
        assert 1 <= rows <= 128
        assert rows == 1 or rows * lengths[start] <= EVAL_PADDING_SLACK * lengths[start:end].sum()
    assert max(end - start for start, end in batches) == 128  # short rows fill whole batches
    # the batching changes no prediction: every row as its own batch gives the same logits
    s = setup(cfg_of(tiny_cfg))
    split = s.data.validation
    batched, one_by_one = (predict(s.student, split, s.device, n) for n in (128, 1))
    torch.testing.assert_close(batched, one_by_one, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_large_step_buffers_reuse_freed_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 47 MB buffer allocated at every step (a BERT student's word-embedding gradient) no
    longer page-faults all its pages again each time: glibc would mmap and unmap it."""
    import resource

    from kdray.training.loop import reuse_freed_cpu_memory

    monkeypatch.setenv("KDRAY_MALLOC", "system")
    reuse_freed_cpu_memory.cache_clear()
    assert reuse_freed_cpu_memory() is False  # left alone when asked
    monkeypatch.delenv("KDRAY_MALLOC")
    reuse_freed_cpu_memory.cache_clear()
    assert reuse_freed_cpu_memory() is True
    for _ in range(4):  # the heap grows to hold it (its pages are mapped once or twice)
        torch.zeros(30522, 384).add_(1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(8):
        torch.zeros(30522, 384).add_(1)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    pages = 30522 * 384 * 4 // 4096  # mmap'd blocks fault on every 4 KiB page, every time
    assert faults < 2 * pages, f"{faults} page faults for 8 allocations of {pages} pages"


def test_group_by_length_batches_are_a_shuffled_partition_of_similar_lengths() -> None:
    from kdray.training.loop import BatchOrder

    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, 64, (1000,), generator=gen)
    plain, grouped = BatchOrder(1000, 32, 7), BatchOrder(1000, 32, 7, lengths)
    per_epoch = 1000 // 32
    for epoch in range(2):
        steps = range(epoch * per_epoch, (epoch + 1) * per_epoch)
        rows = torch.cat([grouped(s) for s in steps])
        assert len(rows) == len(set(rows.tolist())) == per_epoch * 32  # each row at most once
        padded = {name: sum(int(lengths[o(s)].max()) for s in steps) for name, o in
                  (("plain", plain), ("grouped", grouped))}  # fmt: skip
        assert padded["grouped"] < 0.6 * padded["plain"]
        longest = [int(lengths[grouped(s)].max()) for s in steps]
        assert longest != sorted(longest, reverse=True)  # the order of batches is shuffled
    again = BatchOrder(1000, 32, 7, lengths)
    assert all(torch.equal(again(s), grouped(s)) for s in (40, 3, 0))  # any step, any order
    assert not torch.equal(BatchOrder(1000, 32, 8, lengths)(0), grouped(0))
