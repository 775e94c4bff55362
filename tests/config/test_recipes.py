"""Recipes: named presets for published methods (MLKD-BERT, DWT, ...), stage lengths
as fractions, students with fewer heads, and knowledge weights that vary over training."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from kdray.base.errors import ConfigError
from kdray.base.results import PHASE_LOG
from kdray.base.strict import set_path
from kdray.config import TrialConfig, WeightSchedule
from kdray.config.recipes import RECIPES, load_recipe
from kdray.training.checks import check_trial
from kdray.training.stages import plan
from kdray.training.trainer import distil
from tests.helpers import REPO

MLKD_STAGE_1 = {"embedding_relation", "attention_relation", "hidden"}
MLKD_STAGE_2 = {"sample_relation", "contrastive", "soft"}


def recipe_cfg(tiny_cfg: dict[str, Any], recipe: str, **over: Any) -> TrialConfig:
    """`tiny_cfg` (without its knowledge types, which would override the recipe's) under
    `recipe`, with `over` (dotted paths) set."""
    raw = copy.deepcopy({k: v for k, v in tiny_cfg.items() if k != "knowledge"})
    for path, value in over.items():
        set_path(raw, path, value)
    return TrialConfig.from_dict({**raw, "recipe": recipe})


def phase_log(result: Any) -> pd.DataFrame:
    return pd.read_parquet(Path(result.output_dir) / PHASE_LOG)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_is_a_complete_valid_config(name: str) -> None:
    assert {"acks", "vanilla", "tinybert", "mlkd", "mlkd_one_stage", "dwt"} <= set(RECIPES)
    cfg = check_trial(TrialConfig.from_dict({"recipe": name}))
    assert cfg.recipe == name
    assert list(cfg.knowledge.types) == load_recipe(name)["knowledge"]["types"]


def test_the_config_overrides_its_recipe_key_by_key() -> None:
    cfg = TrialConfig.from_dict({"recipe": "mlkd", "knowledge": {"temperature": 3.0}})
    assert cfg.knowledge.temperature == 3.0 and len(cfg.knowledge.types) == 6  # merged
    assert not cfg.knowledge.hidden_include_embeddings and cfg.stages is not None
    mine = TrialConfig.from_dict({"recipe": "mlkd", "stages": [{"types": ["soft"]}]})
    assert mine.stages is not None and len(mine.stages) == 1  # lists replace
    assert TrialConfig.from_dict(cfg.to_dict()) == cfg  # a saved config reads back the same
    with pytest.raises(ConfigError, match=r"unknown recipe 'mlk'.*did you mean 'mlkd'.*valid:"):
        TrialConfig.from_dict({"recipe": "mlk"})


def test_stage_fractions_follow_max_steps() -> None:
    cfg = TrialConfig.from_dict({"recipe": "mlkd", "trainer": {"max_steps": 301}})
    stages = plan(cfg, cfg.knowledge.types)
    assert [s.steps for s in stages] == [150, 150]  # round(0.5 x 301), each
    assert [s.start for s in stages] == [0, 150] and stages[1].reset_optimizer
    assert not stages[1].reset_student  # MLKD keeps the student
    with pytest.raises(ConfigError, match=r"'stages\[0\]' sets both steps \(5\) and fraction"):
        TrialConfig.from_dict({"stages": [{"steps": 5, "fraction": 0.5}]})
    with pytest.raises(ConfigError, match=r"'stages\[0\].fraction' must be in \(0, 1\]"):
        TrialConfig.from_dict({"stages": [{"fraction": 1.5}]})


@pytest.mark.parametrize(("heads", "init"), [(4, "remap"), (2, "remap"), (1, "remap"),
                                             (2, "random")])  # fmt: skip
def test_mlkd_switches_knowledge_at_the_boundary_with_any_head_count(
    tiny_cfg: dict, count_losses: Any, heads: int, init: str
) -> None:
    """The tiny teacher has 4 heads; the student 4, 2 or 1 (attention_relation groups the
    context vectors by student head). Stage-2 losses are never computed in stage 1, nor
    stage-1 losses in stage 2, and there is no hard-label loss at all."""
    cfg = recipe_cfg(tiny_cfg, "mlkd", **{"student.num_heads": heads, "student.init": init,
                                          "trainer.max_steps": 20})  # fmt: skip
    calls = count_losses(MLKD_STAGE_1 | MLKD_STAGE_2 | {"hard"})
    result = distil(cfg)
    log = phase_log(result)
    assert result.status == "finished" and list(log["stage"]) == [0, 0, 1, 1]
    assert "loss_hard" not in log.columns and calls["hard"] == 0
    first, second = log[log["stage"] == 0], log[log["stage"] == 1]
    for k in MLKD_STAGE_1:
        assert first[f"loss_{k}"].notna().all() and second[f"loss_{k}"].isna().all()
    for k in MLKD_STAGE_2:
        assert first[f"loss_{k}"].isna().all() and second[f"loss_{k}"].notna().all()
    # 10 steps per stage, each type computed once per step of its stage
    assert {calls[k] for k in MLKD_STAGE_1 | MLKD_STAGE_2} == {10}
    assert log["final"].all() and (log["episode"] == 0).all()  # one student throughout


def test_mlkd_resumed_mid_stage_two_is_exact(tiny_cfg: dict, tmp_path: Path) -> None:
    """Killed at step 8 of 12 (stage 2 starts after step 6, with a fresh optimiser and
    schedule), resumed: the same phase log and test metrics as an uninterrupted run."""
    from tests.helpers import killed_and_resumed

    def cfg(name: str) -> TrialConfig:
        return recipe_cfg(tiny_cfg, "mlkd", **{
            "student.num_heads": 2, "trainer.max_steps": 12, "trainer.eval_every": 2,
            "selector.phase_length": 2, "trainer.output_dir": str(tmp_path / name)})  # fmt: skip

    whole, resumed = killed_and_resumed(cfg, tmp_path, crash_at_step=8)
    assert list(phase_log(whole)["stage"]) == [0, 0, 0, 1, 1, 1]  # the kill: in stage 2
    assert resumed.status == "finished" and resumed.steps == 12


def test_attention_with_fewer_student_heads_points_to_attention_relation(tiny_cfg: dict) -> None:
    with pytest.raises(ConfigError, match="attention_relation"):
        distil(recipe_cfg(tiny_cfg, "tinybert", **{"student.num_heads": 2}))


# ------------------------------------------------------------------------ weight schedules


def test_weight_schedules_at_hand_computed_progress_points() -> None:
    linear = WeightSchedule(kind="linear", start=4, end=1)
    assert [linear.value(t) for t in (0.0, 0.5, 1.0)] == [4.0, 2.5, 1.0]
    half = WeightSchedule(kind="linear", start=4, end=1, horizon=0.5)
    assert [half.value(t) for t in (0.25, 0.5, 0.75)] == [2.5, 1.0, 1.0]
    cosine = WeightSchedule(kind="cosine", start=4, end=1)
    assert cosine.value(0.0) == 4.0 and cosine.value(1.0) == pytest.approx(1.0)
    assert cosine.value(0.5) == pytest.approx(2.5)
    assert cosine.value(0.25) == pytest.approx(1 + 3 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert WeightSchedule(start=4).value(0.7) == 4.0


def test_a_schedule_multiplies_the_selectors_action(tiny_cfg: dict) -> None:
    """vanilla selector, alpha 0.25: soft's action is 0.25 every phase; the schedule 4 -> 1
    over training scales it at each phase's start (progress 0, 0.25, 0.5, 0.75)."""
    cfg = TrialConfig.from_dict(tiny_cfg).replace(**{
        "knowledge.types": ["hard", "soft"], "selector.kind": "vanilla", "selector.alpha": 0.25,
        "knowledge.schedules": {"soft": {"kind": "linear", "start": 4, "end": 1}},
        "trainer.max_steps": 20,
    })  # fmt: skip
    log = phase_log(distil(cfg))
    assert list(log["progress_start"]) == [0.0, 0.25, 0.5, 0.75]
    want = [0.25 * (4 - 3 * t) for t in (0.0, 0.25, 0.5, 0.75)]
    assert list(log["w_soft"]) == pytest.approx(want)
    assert list(log["w_hard"]) == pytest.approx([0.75] * 4)  # unscheduled: the action alone


def test_bad_schedules_are_refused() -> None:
    bad = [
        ({"hidden": {"kind": "linear", "start": 1, "end": 0}}, r"names 'hidden', which is not"),
        ({"soft": {"kind": "linear", "start": 1, "end": -1}}, r"start and end must be >= 0"),
        ({"soft": {"kind": "cosine", "horizon": 0}}, r"horizon' .* must be in \(0, 1\]"),
        ({"soft": {"start": 4, "end": 1}}, r"is constant but sets end"),
        ({"soft": {"kind": "exp"}}, r"'knowledge.schedules.soft.kind' must be one of"),
    ]
    for schedules, match in bad:
        raw = {"knowledge": {"types": ["hard", "soft"], "schedules": schedules}}
        with pytest.raises(ConfigError, match=match):
            check_trial(TrialConfig.from_dict(raw))


# --------------------------------------------------------------------------------- DWT


def test_dwt_distils_a_deeper_student_from_a_shallower_teacher(tiny_cfg: dict) -> None:
    """A 5-layer student under the 2-layer tiny teacher: remap copies teacher layers 1, 2 and
    then the last one again; hidden states map to teacher layers, never the embeddings."""
    cfg = recipe_cfg(tiny_cfg, "dwt", **{
        "teacher.num_layers": None, "student.num_layers": 5, "student.init": "remap",
        "knowledge.types": ["hard", "soft", "hidden"],
        "knowledge.schedules": {"soft": {"kind": "linear", "start": 4, "end": 1}},
    })  # fmt: skip
    assert cfg.knowledge.temperature == 1.0
    result = distil(cfg)
    log = phase_log(result)
    assert result.status == "finished" and log["loss_hidden"].notna().all()
    assert log["w_soft"].iloc[0] == 4.0 and log["w_soft"].is_monotonic_decreasing


def test_a_recipes_teacher_depth_gives_way_to_a_teacher_folder(tiny_cfg: dict) -> None:
    with pytest.raises(ConfigError, match=r"teacher.num_layers: null"):
        recipe_cfg(tiny_cfg, "dwt")


def gate_cfg(tiny_cfg: dict, **over: Any) -> TrialConfig:
    """The tiny 2-layer teacher under a 3-layer student (a smaller teacher; init remap, the
    tiny config's, over the recipe's random)."""
    over = {"teacher.num_layers": None, "student.num_layers": 3,
            "knowledge.types": ["hard", "soft"], **over}  # fmt: skip
    return recipe_cfg(tiny_cfg, "dwt", **over)


def test_the_teacher_gate_compares_a_smaller_teacher_with_a_cached_hard_only_student(
    tiny_cfg: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from kdray.models.classifier import load_classifier
    from kdray.training.loop import evaluate
    from kdray.training.teacher_gate import REFERENCE, reference_dir

    cfg = gate_cfg(tiny_cfg, **{"trainer.learning_rate": 3e-4})  # a reference of its own
    result = distil(cfg)
    gap = result.teacher_gap
    assert gap is not None and set(gap["teachers"]) == {"teacher"}
    saved = json.loads((tmp_path / "run" / "results.json").read_text())["teacher_gap"]
    assert saved == gap
    ref = json.loads((reference_dir(cfg, {"teacher": cfg.teacher.path}) / REFERENCE).read_text())
    assert gap["reference"] == ref["validation"]["accuracy"]
    assert ref["config"]["knowledge"]["types"] == ["hard"] and ref["config"]["trainer"]["seed"] == 0
    assert ref["config"]["student"] == cfg.to_dict()["student"]  # the run's shape and init
    from kdray.training.build import setup  # the teacher's score: on the run's own validation split

    s = setup(cfg)
    teacher = load_classifier(cfg.teacher.path).eval()  # type: ignore[arg-type]
    expect = evaluate(teacher, s.data.validation, s.spec, s.device, 64)["accuracy"]
    assert gap["teachers"]["teacher"]["validation"] == expect
    assert gap["teachers"]["teacher"]["gap"] == pytest.approx(100 * (gap["reference"] - expect))
    assert capsys.readouterr().out.count("training the reference student") == 1
    distil(cfg.replace(**{"trainer.seed": 3, "trainer.output_dir": str(tmp_path / "b")}))
    assert "training the reference student" not in capsys.readouterr().out  # cached, any seed


def test_the_teacher_gate_warns_or_refuses_a_teacher_far_below(
    tiny_cfg: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    import kdray.training.teacher_gate as gate
    from kdray.base.errors import KdrayError

    monkeypatch.setattr(gate, "teacher_validation", lambda cfg, paths, names: {"teacher": -1.0})
    result = distil(gate_cfg(tiny_cfg))  # reference >= 0 > -1: 100+ points below
    assert result.status == "finished" and result.teacher_gap is not None
    assert result.teacher_gap["below"] == ["teacher"]
    assert "points below a hard-only student" in caplog.text
    strict = gate_cfg(tiny_cfg, **{"teacher_gate.strict": True,
                                   "trainer.output_dir": str(tmp_path / "strict")})  # fmt: skip
    with pytest.raises(KdrayError, match=r"teacher 'teacher'.*points below.*teacher_gate.strict"):
        distil(strict)
    assert not (tmp_path / "strict").exists() or not any((tmp_path / "strict").iterdir())
    monkeypatch.setattr(gate, "teacher_validation", lambda cfg, paths, names: {"teacher": 2.0})
    fine = distil(strict.replace(**{"trainer.output_dir": str(tmp_path / "fine")}))
    assert fine.teacher_gap is not None and fine.teacher_gap["below"] == []


def test_teachers_of_one_shape_share_a_random_init_reference(
    tiny_cfg: dict, tiny_teacher: str, second_teacher: str
) -> None:
    """A random-init student takes only its template from the teacher: two teachers of one
    width (other weights, other depth) share its reference; a remap student's differ."""
    from kdray.training.teacher_gate import reference_dir

    cfg = gate_cfg(tiny_cfg, **{"student.num_layers": 4, "student.init": "random"})
    a, b = {"teacher": tiny_teacher}, {"teacher": second_teacher}
    assert reference_dir(cfg, a) == reference_dir(cfg, b)
    remap = cfg.replace(**{"student.init": "remap"})
    assert reference_dir(remap, a) != reference_dir(remap, b)
    assert reference_dir(cfg, a) != reference_dir(cfg.replace(**{"trainer.max_steps": 11}), a)


def test_the_teacher_gate_skips_larger_teachers_hard_only_runs_and_off(tiny_cfg: dict) -> None:
    from kdray.training.teacher_gate import check_teachers as check

    larger = TrialConfig.from_dict(tiny_cfg)  # 2-layer teacher, 1-layer student
    assert check(larger, None, distil) is None
    assert check(gate_cfg(tiny_cfg, **{"knowledge.types": ["hard"]}), None, distil) is None
    assert check(gate_cfg(tiny_cfg, **{"teacher_gate.check": "off"}), None, distil) is None
    with pytest.raises(ConfigError, match=r"'teacher_gate.gap' must be >= 0"):
        gate_cfg(tiny_cfg, **{"teacher_gate.gap": -1})


# ------------------------------------------------------------------------------ the sweep


def test_the_recipes_ablation_sweep_runs_every_recipe_with_overrides() -> None:
    from kdray.search.sweep_file import load_spec

    path = REPO / "search_spaces" / "recipes_ablation.yaml"
    spec = load_spec(path, [("trial.trainer.max_steps", 60), ("sweep.num_samples", 1)])
    recipes = spec.search["recipe"].candidates()
    assert set(recipes) == {"acks", "vanilla", "mlkd", "dwt"}
    for recipe in recipes:
        cfg = spec.trial_config({"recipe": recipe, "trainer.seed": 1})
        assert cfg.recipe == recipe and cfg.trainer.max_steps == 60
        assert cfg.selector.measure_reward and cfg.selector.phase_length == 25  # the trial's
    dwt = spec.trial_config({"recipe": "dwt"})
    assert dwt.teacher.num_layers == 1 and dwt.teacher.max_steps == 400  # merged sections


def test_sweep_set_is_refused_with_resume(tmp_path: Path) -> None:
    from kdray.sweep import main

    with pytest.raises(ConfigError, match=r"--set changes the sweep file.*resumed"):
        main(["--resume", str(tmp_path), "--set", "trial.trainer.max_steps=60"])
