"""Teacher pools, per-batch teacher weights and stage plans (the one core of the redesign)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from kdray.base.errors import ConfigError
from kdray.base.results import PHASE_LOG
from kdray.config import TrialConfig
from kdray.models.source import random_teacher
from kdray.training.stages import plan
from kdray.training.trainer import Run, distil, setup
from tests.helpers import REPO, pool_cfg


class OneHot:
    """A per-batch hook that puts all weight on teacher `i`."""

    def __init__(self, i: int, n: int) -> None:
        self.i, self.n = i, n

    def __call__(self, view: Any) -> torch.Tensor:
        w = torch.zeros(len(view.batch["labels"]), self.n)
        w[:, self.i] = 1.0
        return w


@pytest.mark.parametrize("which", [0, 1])
def test_hook_with_all_weight_on_one_teacher_gives_its_single_teacher_loss(
    tiny_cfg: dict, tiny_teacher: str, second_teacher: str, which: int
) -> None:
    types = {
        "knowledge.types": ["hard", "soft", "hidden", "relation", "attention_relation"],
        "knowledge.feature_teacher": "weighted",  # every type weighted as soft labels are
    }
    pool = Run(setup(pool_cfg(tiny_cfg, tiny_teacher, second_teacher, **types)), None, False)
    path = [tiny_teacher, second_teacher][which]
    one_cfg = TrialConfig.from_dict(tiny_cfg).replace(**{"teacher.path": path, **types})
    one = Run(setup(one_cfg), None, False)
    # the same student and the same projections towards that teacher
    one.s.student.load_state_dict(pool.s.student.state_dict())
    one.s.knowledge["to:teacher"].load_state_dict(
        pool.s.knowledge["to:" + "ab"[which]].state_dict()
    )
    pool.policy.batch_weights = OneHot(which, 2)  # type: ignore[method-assign]
    for run in (pool, one):
        run.action = dict.fromkeys(run.s.types, 1.0)
        run.s.student.eval()  # no dropout: the two forward passes are the same computation
    batch = pool.batch(0)
    got, want = pool.losses(batch), one.losses(batch)
    assert set(got) == set(want) == set(pool.s.types)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-6, atol=1e-7, msg=k)


def test_uniform_weights_average_the_teachers(
    tiny_cfg: dict, tiny_teacher: str, second_teacher: str
) -> None:
    weighted = {"knowledge.feature_teacher": "weighted"}
    run = Run(setup(pool_cfg(tiny_cfg, tiny_teacher, second_teacher, **weighted)), None, False)
    run.action = dict.fromkeys(run.s.types, 1.0)
    run.s.student.eval()
    batch = run.batch(0)
    uniform = run.losses(batch)
    per_teacher = []
    for i in range(2):
        run.policy.batch_weights = OneHot(i, 2)  # type: ignore[method-assign]
        per_teacher.append(run.losses(batch))
    for k in ("soft", "hidden"):
        torch.testing.assert_close(uniform[k], (per_teacher[0][k] + per_teacher[1][k]) / 2)
    torch.testing.assert_close(uniform["hard"], per_teacher[0]["hard"])  # no teacher read


def test_a_hook_that_selects_no_teacher_trains_nothing_from_teachers(
    tiny_cfg: dict, tiny_teacher: str, second_teacher: str
) -> None:
    run = Run(setup(pool_cfg(tiny_cfg, tiny_teacher, second_teacher)), None, False)
    run.action = dict.fromkeys(run.s.types, 1.0)
    run.policy.batch_weights = lambda view: torch.zeros(len(view.batch["labels"]), 2)  # type: ignore[method-assign]
    losses = run.losses(run.batch(0))
    assert float(losses["soft"]) == 0.0 and float(losses["hard"]) > 0
    run.policy.batch_weights = lambda view: torch.ones(3, 2)  # type: ignore[method-assign]
    with pytest.raises(ValueError, match=r"shape \(3, 2\), not \(8, 2\)"):
        run.losses(run.batch(0))


def test_the_cache_budget_holds_for_the_whole_pool(
    tiny_cfg: dict, tiny_teacher: str, second_teacher: str
) -> None:
    """Each teacher's outputs count against one teacher_cache_max_mb; past it, live."""
    from kdray.training.build import CacheBudget

    weighted = {"knowledge.feature_teacher": "weighted"}  # both teachers read hidden states
    s = setup(pool_cfg(tiny_cfg, tiny_teacher, second_teacher, **weighted))
    needs = [s.teacher_needs(i, s.types) for i in range(2)]
    from kdray.teachers.outputs import estimate_bytes

    sizes = [estimate_bytes(s.data.train, n, t.shape.width, t.shape.heads)
             for n, t in zip(needs, s.teachers, strict=True)]  # fmt: skip
    budget = CacheBudget(s.cfg, s.data)
    budget.left = sizes[0] + sizes[1] // 2  # room for the first teacher only
    assert budget(s.teachers[0], needs[0]) and not budget(s.teachers[1], needs[1])


def test_two_teacher_run_caches_both_and_finishes(
    tiny_cfg: dict, tiny_teacher: str, second_teacher: str
) -> None:
    result = distil(pool_cfg(tiny_cfg, tiny_teacher, second_teacher))
    assert result.status == "finished" and result.teacher_cache == "cached"
    assert set(result.teachers) == {"a", "b"}
    saved = json.loads((Path(result.output_dir) / "results.json").read_text())
    assert saved["teachers"] == result.teachers


def test_pools_with_other_labels_or_vocabulary_are_refused_naming_both(
    tiny_cfg: dict, tiny_teacher: str, tokenizer_dir: str, tmp_path: Path
) -> None:
    three = random_teacher(tmp_path / "three", tokenizer_dir, num_labels=3)
    with pytest.raises(ConfigError, match=r"teachers 'a' \(2 labels\) and 'b' \(3 labels\)"):
        distil(pool_cfg(tiny_cfg, tiny_teacher, three))
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    other = tmp_path / "other-vocab"
    BertForSequenceClassification(
        BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                   intermediate_size=37, num_labels=2)
    ).save_pretrained(other)  # fmt: skip
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(other)
    with pytest.raises(ConfigError, match=r"teachers 'a' .* and 'b' .* different vocabularies"):
        distil(pool_cfg(tiny_cfg, tiny_teacher, str(other)))


def test_teacher_and_teachers_together_are_refused(tiny_cfg: dict, tiny_teacher: str) -> None:
    raw = {**tiny_cfg, "teachers": [{"name": "x", "path": tiny_teacher}]}
    with pytest.raises(ConfigError, match="both 'teacher' and 'teachers'"):
        TrialConfig.from_dict(raw)
    raw = {k: v for k, v in tiny_cfg.items() if k != "teacher"}
    raw["teachers"] = [{"name": "x", "path": tiny_teacher}, {"name": "x", "path": tiny_teacher}]
    with pytest.raises(ConfigError, match="names x more than once"):
        TrialConfig.from_dict(raw)


def test_one_teacher_pool_is_the_single_teacher_run(tiny_cfg: dict, tmp_path: Path) -> None:
    one = distil(TrialConfig.from_dict(tiny_cfg))
    raw = {k: v for k, v in tiny_cfg.items() if k != "teacher"}
    raw["teachers"] = [{"name": "teacher", **tiny_cfg["teacher"]}]
    raw["trainer"] = {**tiny_cfg["trainer"], "output_dir": str(tmp_path / "pool")}
    pool = distil(TrialConfig.from_dict(raw))
    assert [h["train_loss"] for h in pool.history] == [h["train_loss"] for h in one.history]
    assert pool.test == one.test


def test_student_folder_is_a_valid_teacher_path(tiny_cfg: dict, tmp_path: Path) -> None:
    first = distil(TrialConfig.from_dict(tiny_cfg).replace(**{"trainer.save_student": True}))
    assert first.student_dir is not None
    assert (Path(first.student_dir) / "tokenizer.json").is_file()
    cfg = TrialConfig.from_dict(tiny_cfg).replace(
        **{"teacher.path": first.student_dir, "trainer.output_dir": str(tmp_path / "second")}
    )
    assert distil(cfg).status == "finished"


def test_num_layers_fine_tunes_a_shallower_teacher(tiny_cfg: dict, tiny_teacher: str) -> None:
    """teacher.num_layers keeps the first layers of the backbone before fine-tuning."""
    from kdray.teachers.pool import teacher_config
    from kdray.training.fine_tune import resolve_teachers

    raw = {k: v for k, v in tiny_cfg.items() if k != "teacher"}
    raw["teachers"] = [
        {"name": "full", "path": tiny_teacher},
        {"name": "half", "backbone": tiny_teacher, "num_layers": 1, "max_steps": 3,
         "max_train_examples": 200},
    ]  # fmt: skip
    cfg = TrialConfig.from_dict(raw)
    assert teacher_config(cfg.teacher_list()[1]).num_hidden_layers == 1
    paths = resolve_teachers(cfg)
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(paths["half"]).num_hidden_layers == 1
    result = distil(cfg, teacher_paths=paths)
    assert result.status == "finished" and result.teachers["half"] == paths["half"]
    with pytest.raises(ConfigError, match=r"num_layers.* is more than the backbone"):
        resolve_teachers(cfg.replace(**{"teachers": [{"backbone": tiny_teacher, "num_layers": 9}]}))


# ---------------------------------------------------------------------------------- stage plans

TWO_STAGES = {
    "knowledge.types": ["hard", "soft", "hidden", "attention_relation"],
    "stages": [
        {"name": "features", "steps": 10, "types": ["hidden", "attention_relation"]},
        {"name": "outputs", "steps": 10, "types": ["soft", "hard"]},
    ],
    "trainer.eval_every": 5,
}


def test_acks_two_stage_is_episodes_that_reset_plus_a_frozen_final_stage() -> None:
    cfg = TrialConfig.from_dict(
        {"selector": {"kind": "acks", "mode": "two_stage", "episodes": 2, "episode_steps": 7}}
    )
    stages = plan(cfg, ("hard", "soft"))
    assert [(s.steps, s.reset_student, s.learn, s.segment, s.final) for s in stages] == [
        (7, True, True, 0, False),
        (7, True, True, 1, False),
        (300, True, False, 2, True),
    ]


def test_two_stage_plan_switches_knowledge_and_keeps_the_student(tiny_cfg: dict) -> None:
    result = distil(TrialConfig.from_dict(tiny_cfg).replace(**TWO_STAGES))
    log = pd.read_parquet(Path(result.output_dir) / PHASE_LOG)
    assert result.steps == 20 and list(log["stage"]) == [0, 0, 1, 1]
    assert log["final"].all() and (log["episode"] == 0).all()  # one segment: student kept
    first, second = log[log["stage"] == 0], log[log["stage"] == 1]
    assert first["loss_soft"].isna().all() and first["loss_hard"].isna().all()
    assert first["loss_hidden"].notna().all() and first["loss_attention_relation"].notna().all()
    assert second["loss_hidden"].isna().all() and second["w_attention_relation"].eq(0).all()
    assert second["loss_soft"].notna().all() and second["loss_hard"].notna().all()
    assert list(log["progress"]) == [0.25, 0.5, 0.75, 1.0]  # progress over the segment
    assert [h["step"] for h in result.history] == [5, 10, 15, 20]


KILL_IN_STAGE_2 = """
import os, signal, sys
from kdray.config import TrialConfig
from kdray.training.trainer import distil
import json

class KillAt:
    def report(self, metrics, checkpoint_dir=None):
        if metrics["step"] >= 15:
            os.kill(os.getpid(), signal.SIGKILL)

cfg = TrialConfig.from_dict(json.loads(sys.argv[1]))
distil(cfg, KillAt())
"""


def test_sigkill_in_stage_two_resumes_exactly(tiny_cfg: dict, tmp_path: Path) -> None:
    cfg = TrialConfig.from_dict(tiny_cfg).replace(**TWO_STAGES)
    whole = distil(cfg.replace(**{"trainer.output_dir": str(tmp_path / "whole")}))
    killed = cfg.replace(**{"trainer.output_dir": str(tmp_path / "killed")})
    proc = subprocess.run(
        [sys.executable, "-c", KILL_IN_STAGE_2, json.dumps(killed.to_dict())],
        cwd=REPO,
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    state = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)
    assert state["stage"] == 1 and state["step"] == 15
    resumed = distil(killed)
    a = pd.read_parquet(tmp_path / "whole" / PHASE_LOG).drop(columns="run_id")
    b = pd.read_parquet(tmp_path / "killed" / PHASE_LOG).drop(columns="run_id")
    pd.testing.assert_frame_equal(a, b)
    assert resumed.test == whole.test and resumed.validation == whole.validation
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in whole.history]


def test_bad_stage_plans_are_refused(tiny_cfg: dict) -> None:
    cfg = TrialConfig.from_dict(tiny_cfg)
    with pytest.raises(ConfigError, match=r"'stages\[0\].types' names contrastive"):
        cfg.replace(stages=[{"steps": 5, "types": ["contrastive"]}])
    with pytest.raises(ConfigError, match=r"'stages' and 'selector\.mode: two_stage'"):
        cfg.replace(**{"selector.kind": "acks", "selector.mode": "two_stage",
                       "stages": [{"steps": 5}]})  # fmt: skip
    with pytest.raises(ConfigError, match=r"'stages\[1\].steps' must be > 0"):
        cfg.replace(stages=[{"steps": 5}, {"steps": 0}])
    with pytest.raises(ConfigError, match=r"'stages\[1\].selector: learn' comes after a frozen"):
        cfg.replace(stages=[{"steps": 5, "selector": "frozen"}, {"steps": 5}])
    with pytest.raises(ConfigError, match=r"teacher name 'a\.b'"):
        cfg.replace(**{"teacher.name": "a.b"})


def test_phases_of_a_segment_count_every_stage_end() -> None:
    cfg = TrialConfig.from_dict(
        {"selector": {"phase_length": 30}, "stages": [{"steps": 100}, {"steps": 100}]}
    )
    assert [s.segment_phases for s in plan(cfg, ("hard",))] == [8, 8]
