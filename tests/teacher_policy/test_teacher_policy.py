"""Teacher policies (RL-KD): per-example teacher weights, the REINFORCE policy, what
the run records, resuming, and pools of one."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from kdray.base.errors import ConfigError
from kdray.base.results import PHASE_LOG
from kdray.config import TrialConfig
from kdray.models.features import Features
from kdray.models.source import random_teacher
from kdray.selector.base import PhaseOutcome
from kdray.teacher_policy import (
    POLICIES,
    BatchView,
    PolicyContext,
    TeacherPolicy,
    build_policy,
    kd_loss,
)
from kdray.training.trainer import distil
from tests.helpers import killed_and_resumed, pool_cfg

NAMES = ("A", "B")


def policy(kind: str = "rl", d: int = 4, n: int = 2, **knobs: Any) -> TeacherPolicy:
    names = ("A", "B", "C", "D")[:n]
    raw = {"teachers": [{"name": k} for k in names], "teacher_policy": {"kind": kind, **knobs}}
    ctx = PolicyContext(names, False, 2, d, 2.0, scores=dict.fromkeys(names, 0.8))
    return build_policy(TrialConfig.from_dict(raw), ctx)


def view(cls: torch.Tensor, labels: torch.Tensor, **teachers: torch.Tensor) -> BatchView:
    batch = {"labels": labels, "index": torch.arange(len(labels))}
    student = Features(torch.zeros(len(labels), 2), {1: cls[:, None, :]})
    return BatchView(0, batch, student, {k: Features(z) for k, z in teachers.items()})


def outcome(phase: int = 0) -> PhaseOutcome:
    return PhaseOutcome(phase=phase, step=0, progress=0.0, action={}, losses={})


# ------------------------------------------------------------------------ the planted toy


def planted_toy(phases: int, seed: int = 0, **knobs: Any) -> tuple[TeacherPolicy, dict]:
    """Teacher A is right on every example; B is right too, except on the examples that hold
    one token (a random 30%), where it is confidently wrong. A linear student learns from the
    gold labels and from both teachers with the policy's weights; the policy sees the student's
    [CLS] (the example's features), each teacher's probabilities and its CE on the gold label.
    Returns the policy and the weights it gives on fresh examples after `phases` phases."""
    g = torch.Generator().manual_seed(seed)
    n, d, steps, b = 2000, 16, 10, 32
    x = torch.randn(n, d, generator=g)
    y = (x @ torch.randn(d, generator=g) > 0).long()
    token = torch.rand(n, generator=g) < 0.3
    za = F.one_hot(y, 2).float() * 6 - 3
    zb = torch.where(token[:, None], -za, za)
    pol = policy(d=d, **knobs)
    student = torch.nn.Linear(d, 2)
    opt = torch.optim.SGD(student.parameters(), lr=0.1)

    def rescore(idx: torch.Tensor) -> tuple[torch.Tensor, dict, torch.Tensor]:
        with torch.no_grad():
            return student(x[idx]), {"A": za[idx], "B": zb[idx]}, y[idx]

    for phase in range(phases):
        pol.start_phase()
        for _ in range(steps):
            idx = torch.randint(n, (b,), generator=g)
            zs = student(x[idx])
            v = view(x[idx], y[idx], A=za[idx], B=zb[idx])
            v.batch["index"] = idx
            w = pol.weights(v)
            assert w is not None
            kd = torch.stack([kd_loss(zs, z[idx], 2.0, False) for z in (za, zb)], 1)
            loss = F.cross_entropy(zs, y[idx]) + (kd * w).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        pol.end_phase(outcome(phase), rescore)
        pol.log_fields()
    pol.diagnostics()  # a fresh evaluation window for what follows
    pol.freeze()
    idx = torch.arange(n)
    w = pol.weights(view(x, y, A=za, B=zb))
    assert w is not None
    return pol, {"w": w, "token": token, "diag": pol.diagnostics(), "idx": idx}


def test_rl_learns_to_down_weight_the_teacher_that_is_wrong_on_the_token() -> None:
    """Default knobs, a fixed number of phases: the weights prefer the right teacher."""
    _, out = planted_toy(phases=6)
    w, token = out["w"], out["token"]
    assert out["diag"]["teacher/weight_auroc"] >= 0.8
    assert float(w[token, 1].mean()) < 0.3 < float(w[~token, 1].mean())
    assert float(w[token, 0].mean()) > 0.7  # A takes over where B is wrong


def test_untrained_rl_weights_are_uniform() -> None:
    """π starts at 0.5 for every teacher: before learning, rl is the average."""
    _, out = planted_toy(phases=0)
    torch.testing.assert_close(out["w"], torch.full_like(out["w"], 0.5))


def reinforce_case(
    student: torch.Tensor, baseline: float | None, lr: float = 1.0, **knobs: Any
) -> tuple[TeacherPolicy, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One learning phase of a logistic rl policy at W = 0, b = 0 (π = 0.5) on the examples
    that `student` (their logits) scores, teacher A right and B wrong on each, reward r1 with
    hard weights unless `knobs` say otherwise. Returns the policy before its update, the
    states, the sampled actions and the r1 rewards."""
    n = len(student)
    knobs = {"reward": "r1", "weights": "hard", **knobs}
    pol = policy(d=1, warmup_phases=0, lr=lr, **knobs)
    pol.baseline = baseline  # type: ignore[attr-defined]
    labels = torch.arange(n) % 2
    za = F.one_hot(labels, 2).float() * 2
    zb = 2 - za
    pol.start_phase()
    pol.weights(view(torch.arange(1.0, n + 1)[:, None], labels, A=za, B=zb))
    _, s, a, _ = pol._buffer[0]  # type: ignore[attr-defined]
    r = -F.cross_entropy(student, labels, reduction="none")
    pol.rescore = lambda idx: (student[idx], {"A": za[idx], "B": zb[idx]}, labels[idx])  # type: ignore[attr-defined]
    return pol, s, a, r


def test_one_reinforce_step_matches_the_hand_computed_update() -> None:
    """gain_j = R_j − before_j (before: −CE of the step's student logits, here 0 → −log 2),
    A_j = (gain_j − b) / std(gain), ΔW = lr·mean_jk A_j (a_jk − π_jk)·s_jk and
    Δbias = lr·mean_jk A_j (a_jk − π_jk) at π = 0.5, then b ← 0.9·b + 0.1·mean gain; the first
    phase's b is its own mean gain."""
    student = torch.tensor([[3.0, 0.0], [0.0, 0.5]])  # sure of example 0, unsure of 1
    for b0 in (-0.3, None):
        pol, s, a, r = reinforce_case(student, b0)
        gain = r + math.log(2)
        b = float(gain.mean()) if b0 is None else b0
        adv = (gain - b) / gain.std(unbiased=False)
        grad = adv[:, None] * (a - 0.5)  # (j, k): ∂ log π(a|s) / ∂ logit = a − π
        pol.end_phase(outcome(), pol.rescore)  # type: ignore[attr-defined]
        net = pol.net  # type: ignore[attr-defined]
        want_w = (grad[..., None] * s).mean((0, 1))
        torch.testing.assert_close(net.weight.detach().squeeze(0), want_w)
        torch.testing.assert_close(net.bias.detach().squeeze(0), grad.mean())
        want_b = float(gain.mean()) if b0 is None else 0.9 * b0 + 0.1 * float(gain.mean())
        assert pol.baseline == pytest.approx(want_b)  # type: ignore[attr-defined]
        log = pol.log_fields()
        assert log["tp_reward"] == pytest.approx(float(r.mean()))
        assert log["tp_baseline"] == pytest.approx(b - math.log(2), abs=1e-6)  # the one used


def test_soft_weights_are_rewarded_for_what_the_selection_changed() -> None:
    """Soft weights: the student never learned from the samples, so example j's baseline is its
    r2 had every teacher been selected, gain_j = −(mean KD over the selected − mean KD over
    all): how far each example's gold loss moved does not enter the update."""
    g = torch.Generator().manual_seed(0)
    student = torch.randn(64, 2, generator=g) * 3  # gold losses from ~0 to ~6
    pol, s, a, _ = reinforce_case(student, None, reward="r2", weights="soft")
    zs, teachers, _ = pol.rescore(torch.arange(64))  # type: ignore[attr-defined]
    kd = torch.stack([kd_loss(zs, teachers[k], 2.0, False) for k in NAMES], 1)
    sel = a.clone()
    sel[sel.sum(1) == 0] = torch.tensor([1.0, 0.0])  # π ties at 0.5: the first teacher
    gain = -(kd * sel).sum(1) / sel.sum(1) + kd.mean(1)
    adv = (gain - gain.mean()) / gain.std(unbiased=False)
    pol.end_phase(outcome(), pol.rescore)  # type: ignore[attr-defined]
    want = (adv[:, None, None] * (a - 0.5)[..., None] * s).mean((0, 1))
    torch.testing.assert_close(pol.net.weight.detach().squeeze(0), want)  # type: ignore[attr-defined]


@pytest.mark.parametrize("sign", [1, -1])
def test_reinforce_moves_toward_actions_with_reward_above_the_baseline(sign: int) -> None:
    """One example: its reward above the baseline makes the actions taken more likely, below
    it less likely."""
    student = torch.tensor([[2.0, 0.0]])  # R = −CE ≈ −0.127
    gain = -F.cross_entropy(student, torch.tensor([0])) + math.log(2)
    pol, s, a, _ = reinforce_case(student, float(gain) - sign * 0.5, lr=0.1)

    def log_likelihood() -> float:
        with torch.no_grad():
            p = pol.probabilities(s)  # type: ignore[attr-defined]
        return float((a * p.log() + (1 - a) * (1 - p).log()).sum())

    before = log_likelihood()
    pol.end_phase(outcome(), pol.rescore)  # type: ignore[attr-defined]
    assert sign * (log_likelihood() - before) > 0


def test_warm_up_selects_every_teacher_and_learns_nothing() -> None:
    pol = policy(d=1, warmup_phases=1)
    before = [p.detach().clone() for p in pol.net.parameters()]  # type: ignore[attr-defined]
    pol.start_phase()
    labels = torch.tensor([0, 1])
    w = pol.weights(view(torch.ones(2, 1), labels, A=torch.eye(2), B=torch.eye(2)))
    assert w is not None
    torch.testing.assert_close(w, torch.full((2, 2), 0.5))
    pol.end_phase(outcome(), lambda idx: (torch.zeros(2, 2), {}, labels))
    for p, q in zip(before, pol.net.parameters(), strict=True):  # type: ignore[attr-defined]
        torch.testing.assert_close(p, q.detach())
    assert math.isnan(pol.log_fields()["tp_reward"])


@pytest.mark.parametrize("kind", sorted(POLICIES))
@pytest.mark.parametrize("n", [2, 4])
def test_weights_sum_to_one_per_example(kind: str, n: int) -> None:
    knobs = {"warmup_phases": 0} if kind == "rl" else {}
    for mode in ("soft", "hard") if kind == "rl" else ("soft",):
        pol = policy(kind, d=3, n=n, **knobs, **({"weights": mode} if kind == "rl" else {}))
        g = torch.Generator().manual_seed(0)
        labels = torch.randint(2, (16,), generator=g)
        teachers = {k: torch.randn(16, 2, generator=g) for k in pol.ctx.names}
        for _ in range(3):
            w = pol.weights(view(torch.randn(16, 3, generator=g), labels, **teachers))
            assert w is not None and w.shape == (16, n)
            assert bool((w >= 0).all())
            torch.testing.assert_close(w.sum(1), torch.ones(16))


def test_hard_rl_with_no_teacher_selected_lets_the_most_probable_teach() -> None:
    pol = policy(d=1, warmup_phases=0, weights="hard")
    net = pol.net  # type: ignore[attr-defined]
    with torch.no_grad():
        net.bias.fill_(-30.0)  # π ≈ 0: nothing is ever sampled
        net.weight.fill_(1.0)  # ... but the teacher with the larger loss feature is more probable
    labels = torch.tensor([0, 0])
    za = torch.tensor([[5.0, 0.0], [5.0, 0.0]])  # right: small CE
    zb = torch.tensor([[0.0, 5.0], [0.0, 5.0]])  # wrong: large CE
    w = pol.weights(view(torch.zeros(2, 1), labels, A=za, B=zb))
    assert w is not None
    torch.testing.assert_close(w, torch.tensor([[0.0, 1.0], [0.0, 1.0]]))


def test_best_single_picks_the_teacher_with_the_lowest_gold_loss() -> None:
    pol = policy("best_single", n=3)
    labels = torch.tensor([0, 1, 1])
    a = torch.tensor([[3.0, 0.0], [3.0, 0.0], [0.0, 1.0]])  # right, wrong, right (weakly)
    b = torch.tensor([[0.0, 3.0], [0.0, 3.0], [0.0, 0.5]])  # wrong, right, right (weaker)
    c = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 4.0]])  # right (weakly), unsure, right
    w = pol.weights(view(torch.zeros(3, 4), labels, A=a, B=b, C=c))
    assert w is not None
    torch.testing.assert_close(w, torch.eye(3)[[0, 1, 2]])


def test_fixed_kinds() -> None:
    labels = torch.tensor([0, 1, 0])
    v = view(torch.zeros(3, 4), labels)
    single = policy("single", teacher="B").weights(v)
    assert single is not None and single.tolist() == [[0.0, 1.0]] * 3
    avg = policy("average", n=4).weights(v)
    assert avg is not None and avg.tolist() == [[0.25] * 4] * 3
    raw = {"teachers": [{"name": "A"}, {"name": "B"}], "teacher_policy": {"kind": "weighted"}}
    ctx = PolicyContext(NAMES, False, 2, 4, 2.0, scores={"A": 0.9, "B": 0.6})
    weighted = build_policy(TrialConfig.from_dict(raw), ctx).weights(v)
    assert weighted is not None
    torch.testing.assert_close(weighted, torch.tensor([[0.6, 0.4]] * 3))
    rand = policy("rand_single", n=3)
    draws = [rand.weights(v) for _ in range(30)]
    for w in draws:  # one teacher for the whole mini-batch
        assert w is not None and bool((w == w[0]).all()) and float(w[0].max()) == 1.0
    assert len({int(w.argmax(1)[0]) for w in draws if w is not None}) == 3


def test_teacher_policy_config_is_checked() -> None:
    pool = {"teachers": [{"name": "a"}, {"name": "b"}]}
    bad = [
        ({"teacher_policy": {"kind": "rll"}}, r"teacher policy kind 'rll'.*did you mean 'rl'"),
        ({"teacher_policy": {"kind": "single", "teacher": "c"}}, r"teacher_policy.teacher.*a, b"),
        ({"teacher_policy": {"kind": "rl", "teacher": "a"}}, r"only read by .*single"),
        ({"teacher_policy": {"kind": "rl", "lr": 0}}, r"teacher_policy.lr"),
        ({"teacher_policy": {"kind": "rl", "reward": "r3", "weights": "hard"},
          "data": {"reward_fraction": 0}}, r"reward: r3.*reward_fraction"),
        ({"teacher_policy": {"kind": "rl", "reward": "r1"}}, r"reward: r1' with weights soft.*r2"),
        ({"knowledge": {"feature_teacher": "c"}}, r"feature_teacher.*\(a, b\), top or weighted"),
        ({"pool": "a,c"}, r"'pool' 'a,c' must name teachers .*unknown: c"),
        ({"pool": "a,a"}, r"more than once"),
    ]  # fmt: skip
    from kdray.training.checks import check_trial

    for extra, match in bad:
        with pytest.raises(ConfigError, match=match):
            check_trial(TrialConfig.from_dict({**pool, **extra}))
    with pytest.raises(ConfigError, match=r"'pool' chooses among 'teachers'"):
        TrialConfig.from_dict({"pool": "teacher"})
    cfg = TrialConfig.from_dict({**pool, "pool": "b"})
    assert [t.name for t in cfg.teacher_list()] == ["b"]
    assert [t.name for t in cfg.teacher_list(everyone=True)] == ["a", "b"]


# --------------------------------------------------------------------------------- runs


def rl_cfg(tiny_cfg: dict, a: str, b: str, **paths: Any) -> TrialConfig:
    return pool_cfg(
        tiny_cfg, a, b,
        **{"teacher_policy.kind": "rl", "selector.phase_length": 3, "trainer.max_steps": 12,
           **paths},
    )  # fmt: skip


def test_rl_run_logs_teacher_weights_rewards_and_auroc(
    tiny_cfg: dict, tiny_teacher: str, second_teacher: str
) -> None:
    result = distil(rl_cfg(tiny_cfg, tiny_teacher, second_teacher))
    log = pd.read_parquet(Path(result.output_dir) / PHASE_LOG)
    assert len(log) == 4
    torch.testing.assert_close(
        torch.tensor((log["tw_a"] + log["tw_b"]).to_numpy()), torch.ones(4, dtype=torch.float64)
    )
    assert math.isnan(log["tp_reward"].iloc[0])  # the warm-up phase
    assert log["tp_reward"].iloc[1:].notna().all() and log["tp_baseline"].iloc[1:].notna().all()
    last = result.history[-1]
    assert {"teacher/weight_a", "teacher/weight_b", "teacher/weight_auroc"} <= set(last)


def test_rl_with_acks_both_learn(tiny_cfg: dict, tiny_teacher: str, second_teacher: str) -> None:
    """ACKS picks the knowledge weights per phase while rl weighs the teachers per example:
    both change what they do over the run, and the phase log has both records."""
    from kdray.training.trainer import Run, setup

    cfg = rl_cfg(
        tiny_cfg, tiny_teacher, second_teacher,
        **{"selector.kind": "acks", "data.reward_fraction": 0.1, "trainer.max_steps": 18,
           "teacher_policy.warmup_phases": 0},
    )  # fmt: skip
    from kdray.selector import build_selector

    run = Run(setup(cfg), None, False)
    policy0 = [p.detach().clone() for p in run.policy.net.parameters()]  # type: ignore[attr-defined]
    result = run.run()
    assert result.status == "finished"
    agent = run.selector
    fresh = build_selector(agent.cfg, agent.types)  # the same seed: the actor it started as
    fresh.build(*agent.dims[:2])  # type: ignore[attr-defined]
    for before, after in ((policy0, run.policy.net.parameters()),  # type: ignore[attr-defined]
                          (fresh.actor.parameters(), agent.actor.parameters())):  # type: ignore[attr-defined]  # fmt: skip
        assert any(not torch.equal(x, y) for x, y in zip(before, after, strict=True))
    log = pd.read_parquet(Path(result.output_dir) / PHASE_LOG)
    assert log["w_soft"].nunique() > 1 and log["tw_a"].nunique() > 1
    assert log["tp_reward"].notna().all() and log["reward"].notna().any()


def test_resume_after_a_kill_gives_the_same_weights_and_phase_log(
    tiny_cfg: dict, tiny_teacher: str, second_teacher: str, tmp_path: Path
) -> None:
    """Killed at the first evaluation (step 5: mid-phase, with sampled actions pending)."""

    def cfg(name: str) -> TrialConfig:
        return rl_cfg(tiny_cfg, tiny_teacher, second_teacher,
                      **{"trainer.output_dir": str(tmp_path / name)})  # fmt: skip

    whole, resumed = killed_and_resumed(cfg, tmp_path)
    last = {k: v for k, v in whole.history[-1].items() if k.startswith("teacher/")}
    assert last == {k: v for k, v in resumed.history[-1].items() if k.startswith("teacher/")}


@pytest.mark.parametrize("kind", ["rl", "best_single", "weighted"])
def test_a_pool_of_one_is_the_one_teacher_run(
    tiny_cfg: dict, tiny_teacher: str, tmp_path: Path, kind: str
) -> None:
    one = distil(TrialConfig.from_dict(tiny_cfg).replace(
        **{"trainer.output_dir": str(tmp_path / "one")}))  # fmt: skip
    raw = {k: v for k, v in tiny_cfg.items() if k != "teacher"}
    raw["teachers"] = [{"name": "teacher", "path": tiny_teacher}]
    raw["teacher_policy"] = {"kind": kind}
    pool = distil(TrialConfig.from_dict(raw).replace(
        **{"trainer.output_dir": str(tmp_path / "pool")}))  # fmt: skip
    assert pool.test == one.test
    assert [r["val_metric"] for r in pool.history] == [r["val_metric"] for r in one.history]
    a = pd.read_parquet(tmp_path / "one" / PHASE_LOG).drop(columns="run_id")
    b = pd.read_parquet(tmp_path / "pool" / PHASE_LOG).drop(columns="run_id")
    pd.testing.assert_frame_equal(a, b)


def test_pool_of_other_label_counts_exits_2_naming_both(
    tiny_cfg: dict, tiny_teacher: str, tokenizer_dir: str, tmp_path: Path
) -> None:
    """Refused before any data or model is read: exit 2, one line, both teachers named."""
    import yaml

    three = random_teacher(tmp_path / "three", tokenizer_dir, num_labels=3)
    raw = pool_cfg(tiny_cfg, tiny_teacher, three).to_dict()
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump(raw))
    proc = subprocess.run(
        [sys.executable, "-m", "kdray.train", "--config", str(path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "'a' (2 labels)" in lines[0] and "'b' (3 labels)" in lines[0]
