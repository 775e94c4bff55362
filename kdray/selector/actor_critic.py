"""ACKS: actor-critic knowledge selection (Wang et al., Findings of EMNLP 2022; docs/methods.md §2).

One agent decides, once per phase of K student steps, how much of each knowledge type to use.
It is DDPG (deterministic actor, Q critic, target networks, replay buffer, Gaussian
exploration) over one transition per phase:

    s_p  = [MLP_S(mean CLS_S), MLP_T(mean CLS_T) (+ progress t/T, last losses / first losses)]
    â_p  = clip(μ(s_p) + N(0, σ²), 0, 1)            while learning; μ(s_p) when frozen
    a_p  = â_p (soft)   or   1[â_p > λ] (hard)       the weights the student trains with
    r_p  = scale·(L_R(before) − L_R(after)) + β·bonus
           bonus = 1 − cos(a_p, a_{p−1}) (soft)  or  −(consecutive repeats of a_p)/P (hard)
    critic: minimise (Q(s_p, â_p) − (r_p + γ·Q'(s_{p+1}, μ'(s_{p+1}))·(1 − done)))²
    actor:  maximise Q(s_p, μ(s_p));  targets: θ' ← ρθ + (1 − ρ)θ'

L_R is the student's CE (MSE for regression) on the reward split, carved from train and never
the dev set. The transition (s_p, â_p, r_p, s_{p+1}) is complete when phase p+1 starts, and
that is when the one critic and one actor update of the phase happen.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdray.base.tensors import default_float
from kdray.config import KnowledgeConfig, SelectorConfig
from kdray.selector.base import PhaseOutcome, PhaseState, Selector, check_option

#: The agent's latest losses and Q(s, a) (logged and reported; checkpointed with it).
STATS = ("critic_loss", "actor_loss", "q")


def mlp(sizes: list[int], out_act: nn.Module | None = None) -> nn.Sequential:
    """Linear layers with ReLU between them (len(sizes) - 1 layers)."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    if out_act is not None:
        layers.append(out_act)
    return nn.Sequential(*layers)


class StateEncoder(nn.Module):
    """concat(MLP_S(cls_S), MLP_T(cls_T), extras): two 2-layer MLPs on the [CLS] summaries."""

    def __init__(self, d_s: int, d_t: int, extras: int, f: int) -> None:
        super().__init__()
        self.d_s, self.d_t = d_s, d_t
        self.mlp_s = mlp([d_s, f, f])
        self.mlp_t = mlp([d_t, f, f])
        self.out_dim = 2 * f + extras

    def forward(self, s: torch.Tensor) -> torch.Tensor:  # (B, d_S + d_T + extras)
        cls_s, cls_t, extras = s.split([self.d_s, self.d_t, s.shape[-1] - self.d_s - self.d_t], -1)
        return torch.cat([F.relu(self.mlp_s(cls_s)), F.relu(self.mlp_t(cls_t)), extras], -1)


class Actor(nn.Module):
    """μ(s): state encoder + 3-layer MLP with a sigmoid output of size K."""

    def __init__(self, enc: StateEncoder, k: int, h: int) -> None:
        super().__init__()
        self.enc = enc
        self.net = mlp([enc.out_dim, h, h, k])

    def logits(self, s: torch.Tensor) -> torch.Tensor:  # (B, raw) -> (B, K), pre-sigmoid
        return self.net(self.enc(s))

    def forward(self, s: torch.Tensor) -> torch.Tensor:  # (B, raw) -> (B, K) in (0, 1)
        return torch.sigmoid(self.logits(s))


class Critic(nn.Module):
    """Q(s, a): state encoder + 3-layer MLP on [encoded state, action]."""

    def __init__(self, enc: StateEncoder, k: int, h: int) -> None:
        super().__init__()
        self.enc = enc
        self.net = mlp([enc.out_dim + k, h, h, 1])

    def forward(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:  # -> (B,)
        return self.net(torch.cat([self.enc(s), a], -1)).squeeze(-1)


def soft_update(target: nn.Module, source: nn.Module, rho: float) -> None:
    """θ' ← ρ·θ + (1 − ρ)·θ'."""
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters(), strict=True):
            t.lerp_(s, rho)


def exploration_bonus(mode: str, action: torch.Tensor, previous: torch.Tensor | None,
                      repeats: int, phases: int) -> float:  # fmt: skip
    """Soft: 1 − cos(a_p, a_{p−1}) (0 for the first phase). Hard: −repeats / P."""
    if mode == "hard":
        return -repeats / max(1, phases)
    if previous is None:
        return 0.0
    return float(1 - F.cosine_similarity(action, previous, dim=0, eps=1e-8))


class ReplayBuffer:
    """Fixed-capacity ring of (s, â, r, s', done) transitions, stored as tensors."""

    def __init__(self, capacity: int, state_dim: int, k: int) -> None:
        self.capacity = capacity
        self.s = torch.zeros(capacity, state_dim)
        self.a = torch.zeros(capacity, k)
        self.r = torch.zeros(capacity)
        self.s2 = torch.zeros(capacity, state_dim)
        self.done = torch.zeros(capacity)
        self.size = 0
        self.pos = 0

    def push(
        self, s: torch.Tensor, a: torch.Tensor, r: float, s2: torch.Tensor, done: bool
    ) -> None:
        i = self.pos
        self.s[i], self.a[i], self.r[i], self.s2[i], self.done[i] = s, a, r, s2, float(done)
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        idx = torch.randint(self.size, (min(n, self.size),), generator=gen)
        return self.s[idx], self.a[idx], self.r[idx], self.s2[idx], self.done[idx]

    def state_dict(self) -> dict[str, Any]:
        return {"s": self.s, "a": self.a, "r": self.r, "s2": self.s2, "done": self.done,
                "size": self.size, "pos": self.pos}  # fmt: skip

    def load_state_dict(self, d: dict[str, Any]) -> None:
        for key in ("s", "a", "r", "s2", "done"):
            getattr(self, key).copy_(d[key])
        self.size, self.pos = int(d["size"]), int(d["pos"])


class ACKSSelector(Selector):
    """`acks`: the actor-critic agent of docs/methods.md §2 (soft or hard actions, online or
    two-stage). Built lazily on the first phase, when the [CLS] widths are known."""

    name = "acks"
    needs_reward_split = True
    needs_cls = True

    def __init__(self, cfg: SelectorConfig, types: tuple[str, ...]) -> None:
        super().__init__(cfg, types)
        self.k = len(types)
        self.gen = torch.Generator().manual_seed(self.seed)
        self.learning = True
        self.built = False
        # per-phase memory
        self.pending: tuple[torch.Tensor, torch.Tensor, float] | None = None
        self.state: torch.Tensor | None = None
        self.raw_action: torch.Tensor | None = None
        self.action: torch.Tensor | None = None
        self.prev_action: torch.Tensor | None = None
        self.repeats = 0
        self.first_losses: dict[str, float] = {}
        self.known_losses: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.stats = dict.fromkeys(STATS, math.nan)
        self.recent_rewards: list[float] = []

    @classmethod
    def validate(cls, cfg: SelectorConfig, knowledge: KnowledgeConfig) -> None:
        """The base checks, then the agent's knobs (mode two_stage is acks's own)."""
        super().validate(dataclasses.replace(cfg, mode="online"), knowledge)
        if cfg.mode == "two_stage":
            check_option(cfg.episodes >= 1, "episodes", ">= 1 for mode two_stage (use mode: "
                         "online for E = 0)", cfg.episodes)  # fmt: skip

    @classmethod
    def check_options(cls, cfg: SelectorConfig) -> None:
        """The agent's knobs."""
        if cfg.episode_steps is not None:
            check_option(cfg.episode_steps > 0, "episode_steps", "> 0", cfg.episode_steps)
        check_option(0.0 < cfg.threshold < 1.0, "threshold", "in (0, 1)", cfg.threshold)
        check_option(0.0 <= cfg.gamma < 1.0, "gamma", "in [0, 1)", cfg.gamma)
        check_option(
            0.0 < cfg.target_update <= 1.0, "target_update", "in (0, 1]", cfg.target_update
        )
        for key in ("actor_lr", "critic_lr", "reward_scale"):
            check_option(getattr(cfg, key) > 0, key, "> 0", getattr(cfg, key))
        for key in ("feature_size", "hidden_size", "buffer_size", "update_batch_size"):
            check_option(getattr(cfg, key) > 0, key, "> 0", getattr(cfg, key))
        check_option(cfg.exploration_noise >= 0, "exploration_noise", ">= 0", cfg.exploration_noise)
        check_option(cfg.beta >= 0, "beta", ">= 0", cfg.beta)
        check_option(cfg.logit_penalty >= 0, "logit_penalty", ">= 0", cfg.logit_penalty)

    # ----------------------------------------------------------------------------- networks

    def build(self, d_s: int, d_t: int) -> None:
        c = self.cfg
        extras = 1 + self.k if c.state_features else 0
        self.dims = (d_s, d_t, extras)
        # network init from selector.seed, on the CPU generator only: the student's CPU and
        # CUDA random streams (dropout, data) are left as they were
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(self.seed)
            enc = (d_s, d_t, extras, c.feature_size)
            self.actor = Actor(StateEncoder(*enc), self.k, c.hidden_size)
            self.critic = Critic(StateEncoder(*enc), self.k, c.hidden_size)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=c.actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=c.critic_lr)
        self.buffer = ReplayBuffer(c.buffer_size, d_s + d_t + extras, self.k)
        self.built = True

    def encode_state(self, st: PhaseState) -> torch.Tensor:
        """The raw state vector: [cls_S, cls_T (, t/T, last losses / first losses)]."""
        assert st.student_cls is not None and st.teacher_cls is not None
        parts = [
            default_float(st.student_cls.detach()).cpu(),
            default_float(st.teacher_cls.detach()).cpu(),
        ]
        if self.cfg.state_features:
            for k, v in st.last_losses.items():
                if math.isfinite(v):
                    self.first_losses.setdefault(k, max(v, 1e-8))
                    self.known_losses[k] = v
            norm = [
                min(5.0, self.known_losses[k] / self.first_losses[k]) if k in self.known_losses
                else 1.0
                for k in self.types
            ]  # fmt: skip
            parts.append(torch.tensor([st.progress, *norm]))
        return torch.cat(parts)

    # ------------------------------------------------------------------------------- phases

    def start_phase(self, state: PhaseState) -> dict[str, float]:
        s = self.encode_state(state)
        if not self.built:
            assert state.student_cls is not None and state.teacher_cls is not None
            self.build(len(state.student_cls), len(state.teacher_cls))
        if self.pending is not None:  # the previous phase's transition is now complete
            s_prev, a_prev, r_prev = self.pending
            self.learn(s_prev, a_prev, r_prev, s, done=False)
            self.pending = None
        with torch.no_grad():
            raw = mu = self.actor(s[None])[0]  # (K,)
            if self.learning and self.cfg.exploration_noise > 0:
                noise = torch.randn(self.k, generator=self.gen) * self.cfg.exploration_noise
                raw = (mu + noise).clamp(0.0, 1.0)
            self.stats["q"] = float(self.critic(s[None], raw[None])[0])  # of the action taken
        action = default_float(raw > self.cfg.threshold) if self.cfg.action == "hard" else raw
        if self.cfg.action == "hard":
            same = self.prev_action is not None and torch.equal(action, self.prev_action)
            self.repeats = self.repeats + 1 if same else 0
        self.state, self.raw_action, self.action = s, raw, action
        return dict(zip(self.types, action.tolist(), strict=True))

    def reward(self, outcome: PhaseOutcome) -> float:
        """scale·(drop of the reward-split loss over the phase) + β·exploration bonus."""
        assert self.action is not None
        drop = 0.0
        if outcome.reward_loss_before is not None and outcome.reward_loss_after is not None:
            drop = outcome.reward_loss_before - outcome.reward_loss_after
        bonus = exploration_bonus(
            self.cfg.action, self.action, self.prev_action, self.repeats, outcome.phases
        )
        return self.cfg.reward_scale * drop + self.cfg.beta * bonus

    def end_phase(self, outcome: PhaseOutcome) -> None:
        assert self.state is not None and self.raw_action is not None
        r = self.reward(outcome)
        if not math.isfinite(r):
            r = -1.0  # a diverging phase is a bad phase, not a crash of the agent
        self.last = {"reward": r, "q_value": self.stats["q"]}
        self.recent_rewards.append(r)
        self.prev_action = self.action
        if outcome.last:
            self.learn(self.state, self.raw_action, r, self.state, done=True)
        else:
            self.pending = (self.state, self.raw_action, r)

    def end_episode(self) -> None:
        self.pending, self.prev_action, self.repeats = None, None, 0
        self.known_losses = {}
        self.recent_rewards = []  # stage-A rewards are in the phase log, not in diagnostics

    def freeze(self) -> None:
        self.learning = False
        self.pending = None

    # ----------------------------------------------------------------------------- learning

    def learn(self, s: torch.Tensor, a: torch.Tensor, r: float, s2: torch.Tensor,
              done: bool) -> None:  # fmt: skip
        """Store the transition; one critic (TD) and one actor (DPG) update."""
        if not self.learning:
            return
        c = self.cfg
        self.buffer.push(s, a, r, s2, done)
        bs, ba, br, bs2, bdone = self.buffer.sample(c.update_batch_size, self.gen)
        with torch.no_grad():
            target = br + c.gamma * (1 - bdone) * self.critic_target(bs2, self.actor_target(bs2))
        critic_loss = F.mse_loss(self.critic(bs, ba), target)
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()
        logits = self.actor.logits(bs)  # (B, K)
        # -Q(s, μ(s)), plus a small penalty on the pre-sigmoid logits so that a saturated
        # action keeps a gradient and can still turn when the critic changes its mind
        actor_loss = -self.critic(bs, torch.sigmoid(logits)).mean()
        actor_loss = actor_loss + c.logit_penalty * logits.pow(2).mean()
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()
        soft_update(self.critic_target, self.critic, c.target_update)
        soft_update(self.actor_target, self.actor, c.target_update)
        self.stats["critic_loss"] = float(critic_loss.detach())
        self.stats["actor_loss"] = float(actor_loss.detach())

    # --------------------------------------------------------------------------- reporting

    def policy(self, state: PhaseState) -> dict[str, float]:
        """μ(s) without noise and without side effects (for inspection and tests)."""
        with torch.no_grad():
            mu = self.actor(self.encode_state(state)[None])[0]
        return dict(zip(self.types, mu.tolist(), strict=True))

    def log_fields(self) -> dict[str, float]:
        return dict(self.last)

    def diagnostics(self) -> dict[str, float]:
        """The latest critic and actor losses and the mean reward since the last call (the
        trainer adds the weights, their spread and saturation, for every selector)."""
        out = {"critic_loss": self.stats["critic_loss"], "actor_loss": self.stats["actor_loss"]}
        if self.recent_rewards:
            out["reward"] = sum(self.recent_rewards) / len(self.recent_rewards)
        self.recent_rewards = []
        return out

    # -------------------------------------------------------------------------- checkpoint

    def state_dict(self) -> dict[str, Any]:
        if not self.built:
            return {"built": False, "gen": self.gen.get_state()}
        stats = torch.tensor([self.stats[k] for k in STATS], dtype=torch.float64)
        return {
            "built": True,
            "dims": list(self.dims),
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "actor_target": self.actor_target.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "buffer": self.buffer.state_dict(),
            "gen": self.gen.get_state(),
            "learning": self.learning,
            "pending": list(self.pending) if self.pending is not None else None,
            "prev_action": self.prev_action,
            "repeats": self.repeats,
            "first_losses": self.first_losses,
            "known_losses": self.known_losses,
            "state": self.state,
            "raw_action": self.raw_action,
            "action": self.action,
            "stats": stats,
            "recent_rewards": torch.tensor(self.recent_rewards, dtype=torch.float64),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["gen"])
        if not state["built"]:
            return
        d_s, d_t, _ = state["dims"]
        self.build(d_s, d_t)
        for key in ("actor", "critic", "actor_target", "critic_target", "actor_opt",
                    "critic_opt", "buffer"):  # fmt: skip
            getattr(self, key).load_state_dict(state[key])
        # The config, not the checkpoint, sets the learning rates: PBT may change them mid-run.
        for opt, lr in ((self.actor_opt, self.cfg.actor_lr), (self.critic_opt, self.cfg.critic_lr)):
            for group in opt.param_groups:
                group["lr"] = lr
        self.learning = state["learning"]
        p = state["pending"]
        self.pending = (p[0], p[1], float(p[2])) if p is not None else None
        self.prev_action, self.repeats = state["prev_action"], state["repeats"]
        self.first_losses, self.known_losses = state["first_losses"], state["known_losses"]
        self.state, self.raw_action, self.action = (
            state["state"],
            state["raw_action"],
            state["action"],
        )
        if "stats" in state:  # older checkpoints lack them: they only feed logs and reports
            self.stats = dict(zip(STATS, state["stats"].tolist(), strict=True))
            self.recent_rewards = state["recent_rewards"].tolist()
