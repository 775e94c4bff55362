"""Selectors: baselines, ACKS maths on hand-computed cases, learning a planted preference,
checkpoint/resume, hard-mode skipping and the phase log."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from kdray.base import results
from kdray.base.errors import ConfigError
from kdray.base.results import PHASE_LOG
from kdray.config import SelectorConfig, TrialConfig
from kdray.selector import SELECTORS, PhaseOutcome, PhaseState, build_selector
from kdray.selector.actor_critic import ACKSSelector, exploration_bonus
from kdray.training.checks import check_trial
from kdray.training.trainer import ListReporter, distil
from tests.helpers import CrashAtFirstReport, killed_and_resumed

TYPES = ("hard", "soft", "hidden", "relation")


def state(progress: float = 0.0, phase: int = 0, seed: int = 0, d: int = 8) -> PhaseState:
    g = torch.Generator().manual_seed(seed)
    return PhaseState(
        phase=phase,
        step=phase * 10,
        progress=progress,
        student_cls=torch.randn(d, generator=g),
        teacher_cls=torch.randn(d, generator=g),
    )


def selector(kind: str, **knobs: Any) -> Any:
    return build_selector(SelectorConfig(kind=kind, **knobs), TYPES)


# ------------------------------------------------------------------------------ baselines


def test_fixed_baselines() -> None:
    assert selector("all").start_phase(state()) == dict.fromkeys(TYPES, 1.0)
    assert selector("none").start_phase(state()) == {
        "hard": 1,
        "soft": 0,
        "hidden": 0,
        "relation": 0,
    }
    van = selector("vanilla", alpha=0.7).start_phase(state())
    assert van == pytest.approx({"hard": 0.3, "soft": 0.7, "hidden": 0.0, "relation": 0.0})


def test_random_baselines_are_seeded_and_in_range() -> None:
    a, b = selector("random_soft", seed=3), selector("random_soft", seed=3)
    draws = [a.start_phase(state()) for _ in range(20)]
    assert draws == [b.start_phase(state()) for _ in range(20)]
    assert all(0 <= v <= 1 for d in draws for v in d.values())
    assert len({tuple(d.values()) for d in draws}) == 20  # a new draw every phase
    hard = selector("random_hard", seed=1)
    for _ in range(50):
        action = hard.start_phase(state())
        assert set(action.values()) <= {0.0, 1.0} and sum(action.values()) >= 1


def test_schedule_follows_progress_buckets(tmp_path: Path) -> None:
    buckets = [
        {"start": 0.0, "end": 0.5, "weights": {"hard": 1.0, "hidden": 2.0}},
        {"start": 0.5, "end": 1.0, "weights": {"soft": 1.0}},
    ]
    cfg = TrialConfig.from_dict({"selector": {"kind": "schedule", "schedule": buckets}})
    sel = build_selector(cfg.selector, TYPES)
    assert sel.start_phase(state(0.2)) == {"hard": 1.0, "soft": 0.0, "hidden": 2.0, "relation": 0.0}
    assert sel.start_phase(state(0.5))["soft"] == 1.0
    assert sel.start_phase(state(1.0))["soft"] == 1.0  # t/T = 1 belongs to the last bucket
    path = tmp_path / "schedule.yaml"
    import yaml

    path.write_text(yaml.safe_dump({"schedule": buckets}))
    # the file is read when the config is checked, into selector.schedule (kept: the file name)
    from_file = check_trial(
        TrialConfig.from_dict({"selector": {"kind": "schedule", "schedule_file": str(path)}})
    )
    assert from_file.selector.schedule == cfg.selector.schedule
    assert from_file.selector.schedule_file == str(path)
    assert build_selector(from_file.selector, TYPES).start_phase(state(0.7))["soft"] == 1.0
    unread = TrialConfig.from_dict({"selector": {"kind": "schedule", "schedule_file": str(path)}})
    with pytest.raises(ConfigError, match="check_trial"):
        build_selector(unread.selector, TYPES)


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"selector": {"kind": "acts"}}, "did you mean 'acks'"),
        ({"selector": {"phase_length": 0}}, "selector.phase_length"),
        ({"selector": {"kind": "none"}, "knowledge": {"types": ["soft"]}}, "add hard"),
        ({"selector": {"kind": "vanilla"}, "knowledge": {"types": ["hard"]}}, "add soft"),
        ({"selector": {"kind": "acks", "mode": "two_stage", "episodes": 0}}, "selector.episodes"),
        ({"selector": {"kind": "random_soft", "mode": "two_stage"}}, "needs selector.kind: acks"),
        ({"selector": {"kind": "acks", "reward_examples": 4}}, "cannot measure"),
        ({"selector": {"kind": "schedule"}}, "needs 'selector.schedule'"),
        (
            {"selector": {"kind": "schedule", "schedule": [{"start": 0.0, "end": 0.6}]}},
            "cover [0, 1]",
        ),
        (
            {"selector": {"kind": "schedule", "schedule": [
                {"start": 0.0, "end": 0.5}, {"start": 0.4, "end": 1.0}]}},
            "without gaps or overlaps",
        ),
        (
            {"selector": {"kind": "schedule", "schedule": [
                {"start": 0.0, "end": 1.0, "weights": {"attention": 1.0}}]}},
            "names 'attention', which is not in knowledge.types",
        ),
        ({"selector": {"kind": "schedule", "schedule_file": "/no/such.yaml"}}, "not found"),
        ({"knowledge": {"weights": dict.fromkeys(TYPES, 0)}}, "weight 0"),
        ({"selector": {"kind": "acks", "measure_reward": False}}, "cannot be false"),
    ],
)  # fmt: skip
def test_bad_selector_config(raw: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_trial(TrialConfig.from_dict(raw))
    assert needle in str(err.value)


def test_every_kind_is_registered() -> None:
    assert set(SELECTORS) == {
        "all",
        "none",
        "vanilla",
        "random_soft",
        "random_hard",
        "schedule",
        "acks",
    }


# ------------------------------------------------------------------- ACKS, hand-computed


def test_exploration_bonus_hand_computed() -> None:
    a, prev = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    assert exploration_bonus("soft", a, prev, 0, 10) == pytest.approx(1.0)  # orthogonal
    assert exploration_bonus("soft", a, a, 0, 10) == pytest.approx(0.0)
    b = torch.tensor([1.0, 1.0])
    assert exploration_bonus("soft", a, b, 0, 10) == pytest.approx(1 - 1 / math.sqrt(2))
    assert exploration_bonus("soft", a, None, 0, 10) == 0.0
    assert exploration_bonus("hard", a, a, 3, 10) == pytest.approx(-0.3)


def test_soft_and_hard_actions_and_reward() -> None:
    soft = selector("acks", exploration_noise=0.0, beta=0.5, reward_scale=10.0)
    st = state()
    action = soft.start_phase(st)
    mu = soft.policy(st)
    assert action == pytest.approx(mu)  # no noise: the actor's output itself
    assert all(0 < v < 1 for v in action.values())
    soft.end_phase(PhaseOutcome(0, 10, 0.1, action, {}, reward_loss_before=0.70,
                                reward_loss_after=0.64))  # fmt: skip
    assert soft.last["reward"] == pytest.approx(10 * 0.06 + 0.5 * 0.0)  # first phase: no bonus
    second = soft.start_phase(state(0.1, 1))
    soft.end_phase(PhaseOutcome(1, 20, 0.2, second, {}, 0.64, 0.65))
    a1, a2 = torch.tensor(list(action.values())), torch.tensor(list(second.values()))
    bonus = 1 - float(torch.nn.functional.cosine_similarity(a2, a1, dim=0))
    assert soft.last["reward"] == pytest.approx(10 * -0.01 + 0.5 * bonus, abs=1e-6)

    hard = selector("acks", action="hard", exploration_noise=0.0, threshold=0.5, beta=1.0)
    act = hard.start_phase(st)
    mu = hard.policy(st)
    assert act == {k: float(v > 0.5) for k, v in mu.items()}
    hard.end_phase(PhaseOutcome(0, 10, 0.1, act, {}, 0.5, 0.5, phases=10))
    hard.start_phase(st)  # same state, no noise: the same action repeats once
    assert hard.repeats == 1
    hard.end_phase(PhaseOutcome(1, 20, 0.2, act, {}, 0.5, 0.5, phases=10))
    assert hard.last["reward"] == pytest.approx(-1 / 10)  # -(repeats)/P, P = 10 phases


def test_acks_learns_a_planted_preference() -> None:
    """Synthetic reward: `hard` pays early in training, `hidden` pays late. Within 50 episodes
    of 10 phases the deterministic policy prefers hard early and hidden late."""
    # default agent knobs; only the reward is the synthetic one (no bonus, unit scale)
    cfg = SelectorConfig(kind="acks", seed=0, beta=0.0, reward_scale=1.0)
    sel = build_selector(cfg, TYPES)
    for _episode in range(50):
        for p in range(10):
            progress = p / 10
            a = sel.start_phase(state(progress, p))
            good, bad = ("hard", "hidden") if progress < 0.5 else ("hidden", "hard")
            r = a[good] - a[bad]
            sel.end_phase(PhaseOutcome(p, p, progress, a, {}, r, 0.0, last=p == 9))
        sel.end_episode()
    early, late = sel.policy(state(0.1)), sel.policy(state(0.9))
    assert early["hard"] > early["hidden"] + 0.3
    assert late["hidden"] > late["hard"] + 0.3


def test_acks_checkpoint_resume_gives_same_next_action() -> None:
    def fresh() -> ACKSSelector:
        return build_selector(SelectorConfig(kind="acks", seed=5), TYPES)  # type: ignore[return-value]

    def play(sel: ACKSSelector, phases: range) -> list[dict[str, float]]:
        out = []
        for p in phases:
            a = sel.start_phase(state(p / 10, p, seed=p))
            sel.end_phase(PhaseOutcome(p, p, p / 10, a, {"hard": 1.0 / (p + 1)}, 0.5, 0.4))
            out.append(a)
        return out

    whole = fresh()
    play(whole, range(4))
    continued = play(whole, range(4, 7))
    first = fresh()
    play(first, range(4))
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = fresh()
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    # what the logs and reports show comes back too
    assert resumed.stats == first.stats and resumed.recent_rewards == first.recent_rewards
    assert play(resumed, range(4, 7)) == continued


def test_acks_build_leaves_the_global_rng_alone() -> None:
    """The agent's networks come from selector.seed without moving the student's stream."""
    before = torch.random.get_rng_state()
    sel = selector("acks", seed=3)
    sel.start_phase(state())
    assert torch.equal(torch.random.get_rng_state(), before)
    again = selector("acks", seed=3)
    again.start_phase(state())
    assert torch.equal(sel.actor.net[0].weight, again.actor.net[0].weight)


def test_acks_q_value_is_of_the_action_taken() -> None:
    sel = selector("acks", exploration_noise=0.3)
    sel.start_phase(state())
    assert not torch.equal(sel.raw_action, sel.actor(sel.state[None])[0])  # noise was added
    with torch.no_grad():
        q = float(sel.critic(sel.state[None], sel.raw_action[None])[0])
    assert sel.stats["q"] == pytest.approx(q)


def test_acks_diagnostics() -> None:
    sel = selector("acks")
    for p in range(3):
        a = sel.start_phase(state(p / 3, p))
        sel.end_phase(PhaseOutcome(p, p, p / 3, a, {}, 0.5, 0.4))
    d = sel.diagnostics()
    assert {"critic_loss", "actor_loss", "reward"} <= set(d)
    assert math.isfinite(d["critic_loss"]) and math.isfinite(d["actor_loss"])
    a = sel.start_phase(state(0.0, 0))
    sel.end_phase(PhaseOutcome(0, 0, 1.0, a, {}, 0.5, 0.4, last=True))
    sel.end_episode()  # a stage-A episode's rewards stay out of the next report
    assert "reward" not in sel.diagnostics()


# ------------------------------------------------------------------------ in the trainer


def acks_cfg(tiny_cfg: dict, **selector: Any) -> TrialConfig:
    raw = {**tiny_cfg, "selector": {"kind": "acks", "phase_length": 5, "reward_examples": 32,
                                    **selector}}  # fmt: skip
    raw["data"] = {**raw["data"], "reward_fraction": 0.1}
    return TrialConfig.from_dict(raw)


PHASE_COLUMNS = (
    set(results.PHASE_COLUMNS)
    | {f"{results.WEIGHT_PREFIX}{k}" for k in TYPES}
    | {f"{results.LOSS_PREFIX}{k}" for k in TYPES}
)


def test_phase_log_schema_one_row_per_phase(tiny_cfg: dict) -> None:
    rep = ListReporter()
    result = distil(acks_cfg(tiny_cfg), rep)
    log = pd.read_parquet(Path(result.output_dir) / PHASE_LOG)
    assert set(log.columns) == PHASE_COLUMNS
    assert list(log["phase"]) == [0, 1] and list(log["step"]) == [5, 10]
    assert log["reward"].notna().all() and log["reward_loss"].notna().all()
    assert list(log["progress_start"]) == [0.0, 0.5]
    assert log["reward_drop"].iloc[1] == pytest.approx(log["reward_loss"].diff().iloc[1] * -1)
    assert log["val_metric"].notna().all()  # eval_every = phase_length here
    diagnostics = {"selector/critic_loss", "selector/weight_soft", "selector/action_spread",
                   "selector/action_saturation"}  # fmt: skip
    assert diagnostics <= set(rep.results[-1])
    assert rep.results[-1]["selector/weight_soft"] == pytest.approx(log["w_soft"].iloc[1])


def test_weights_reported_when_evaluations_outnumber_phases(tiny_cfg: dict) -> None:
    cfg = acks_cfg(tiny_cfg).replace(**{"trainer.eval_every": 2})  # phases of 5 steps
    rep = ListReporter()
    result = distil(cfg, rep)
    log = pd.read_parquet(Path(result.output_dir) / PHASE_LOG).set_index("phase")
    weight = {int(r["step"]): r["selector/weight_soft"] for r in rep.results}
    assert sorted(weight) == [2, 4, 6, 8, 10]
    assert weight[2] == pytest.approx(log.loc[0, "w_soft"])  # mid-phase: the phase under way
    assert weight[6] == pytest.approx(log.loc[0, "w_soft"])  # phase 0 ended since step 4
    assert weight[8] == pytest.approx(log.loc[1, "w_soft"])
    assert log.loc[0, "w_soft"] != log.loc[1, "w_soft"]


@pytest.mark.parametrize("measure", [None, True])
def test_measure_reward_logs_drops_for_any_selector(tiny_cfg: dict, measure: bool | None) -> None:
    result = distil(acks_cfg(tiny_cfg, kind="random_soft", measure_reward=measure))
    log = pd.read_parquet(Path(result.output_dir) / PHASE_LOG)
    assert log["reward"].isna().all()  # random_soft is never rewarded
    if measure:
        assert log["reward_drop"].notna().all() and log["reward_loss"].notna().all()
        drop = log["reward_loss"].diff().iloc[1] * -1
        assert log["reward_drop"].iloc[1] == pytest.approx(drop)
    else:
        assert log["reward_drop"].isna().all()


def test_selector_seed_follows_trainer_seed_unless_given(tiny_cfg: dict, tmp_path: Path) -> None:
    def weights(trainer_seed: int, **sel: Any) -> pd.DataFrame:
        cfg = acks_cfg(tiny_cfg, kind="random_soft", **sel)
        out = tmp_path / f"{trainer_seed}-{sel}"
        result = distil(cfg.replace(**{"trainer.seed": trainer_seed,
                                          "trainer.output_dir": str(out)}))  # fmt: skip
        log = pd.read_parquet(Path(result.output_dir) / PHASE_LOG)
        return log[[f"w_{k}" for k in TYPES]]

    assert not weights(0).equals(weights(1))  # one seed varies the whole run
    pd.testing.assert_frame_equal(weights(0, seed=7), weights(1, seed=7))


def test_two_stage_runs_episodes_then_frozen_final(tiny_cfg: dict) -> None:
    result = distil(acks_cfg(tiny_cfg, mode="two_stage", episodes=2, episode_steps=5))
    log = pd.read_parquet(Path(result.output_dir) / PHASE_LOG)
    assert list(log["episode"]) == [0, 1, 2, 2] and list(log["final"]) == [False, False, True, True]
    assert result.status == "finished" and result.steps == 10


def test_two_stage_validation_lands_on_a_final_row(tiny_cfg: dict) -> None:
    # stage-A episodes of 3 steps end at step 3, where stage B's first evaluation comes
    cfg = acks_cfg(tiny_cfg, mode="two_stage", episodes=1, episode_steps=3)
    result = distil(cfg.replace(**{"trainer.eval_every": 3}))
    log = pd.read_parquet(Path(result.output_dir) / PHASE_LOG)
    assert list(log["episode"]) == [0, 1, 1] and list(log["step"]) == [3, 5, 10]
    assert log["val_metric"].isna().iloc[0] and log["val_metric"].notna().iloc[1:].all()


def test_hard_mode_skips_unselected_losses(tiny_cfg: dict, count_losses) -> None:  # type: ignore[no-untyped-def]
    calls = count_losses(TYPES)
    cfg = acks_cfg(tiny_cfg, action="hard", exploration_noise=0.5)
    cfg = cfg.replace(**{"trainer.max_steps": 20})
    result = distil(cfg)
    log = pd.read_parquet(Path(result.output_dir) / PHASE_LOG)
    for k in TYPES:
        assert set(log[f"w_{k}"]) <= {0.0, 1.0}
        assert calls[k] == 5 * int(log[f"w_{k}"].sum()), k  # 5 steps per phase it was on
    assert 0 < sum(calls.values()) < 20 * len(TYPES)


@pytest.mark.parametrize("kind", ["acks", "random_soft"])
def test_resume_continues_the_same_agent(tiny_cfg: dict, tmp_path: Path, kind: str) -> None:
    def cfg(name: str) -> TrialConfig:
        return acks_cfg(tiny_cfg).replace(
            **{"selector.kind": kind, "trainer.output_dir": str(tmp_path / name)}
        )

    killed_and_resumed(cfg, tmp_path)


def test_resume_with_another_config_is_refused(tiny_cfg: dict) -> None:
    cfg = TrialConfig.from_dict(tiny_cfg)
    with pytest.raises(KeyboardInterrupt):
        distil(cfg, CrashAtFirstReport())
    with pytest.raises(ConfigError, match=r"fresh trainer\.output_dir"):
        distil(cfg.replace(**{"trainer.max_steps": 30}))


def test_output_dir_problems_are_refused_before_setup(
    tiny_cfg: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = TrialConfig.from_dict(tiny_cfg)
    with pytest.raises(KeyboardInterrupt):
        distil(cfg, CrashAtFirstReport())
    import kdray.training.trainer

    def no_setup(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("setup (data, models, teacher) ran before the check")

    monkeypatch.setattr(kdray.training.trainer, "setup", no_setup)
    with pytest.raises(ConfigError, match=r"another config \(differs in trainer\.max_steps\)"):
        distil(cfg.replace(**{"trainer.max_steps": 30}))
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ConfigError, match="is a file"):
        distil(cfg.replace(**{"trainer.output_dir": str(tmp_path / "a-file")}))


def test_reward_split_too_small_is_refused(tiny_cfg: dict) -> None:
    from kdray.training.trainer import setup

    cfg = acks_cfg(tiny_cfg).replace(**{"data.reward_fraction": 0.01})  # 4 examples
    with pytest.raises(ConfigError, match="at least 32"):
        setup(cfg)
