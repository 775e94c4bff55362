"""Everything one run trains with, built once: data, teachers, student, knowledge modules.

    preflight (HF configs only: task, pool, shapes) -> data -> knowledge modules per teacher
    -> teacher models where needed -> student -> each teacher's outputs (cached or live)

The teachers arrive resolved (folders; see `kdray.training.fine_tune.resolve_teachers`): the trainer
never fine-tunes one. Knowledge modules are built per teacher (each has its own layer map and
projections); the student's shape comes from the first teacher.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from kdray.base.errors import ConfigError
from kdray.base.io import cache_root
from kdray.base.tensors import default_float
from kdray.config import TrialConfig
from kdray.data.dataset import TaskData, load_task
from kdray.data.specs import spec_of
from kdray.data.tasks import TaskSpec
from kdray.knowledge import build_knowledge, needs_of
from kdray.knowledge.base import Knowledge, KnowledgeContext
from kdray.models.classifier import build_student, encode, layer_map, load_classifier
from kdray.models.device import autocast, pick_device
from kdray.models.features import Features, Needs, Shape
from kdray.models.source import load_config, resolve_backbone
from kdray.selector import MIN_REWARD_EXAMPLES, SELECTORS, measures_reward
from kdray.teacher_policy import BatchView, TeacherPolicy, measures_reward_split
from kdray.teachers.outputs import TeacherOutputs, estimate_bytes, prepare_outputs
from kdray.teachers.pool import Teacher, named_paths, preflight
from kdray.training.checks import check_trial
from kdray.training.loop import reuse_freed_cpu_memory

log = logging.getLogger(__name__)


@dataclass
class Setup:
    """Everything a run trains with, built once."""

    cfg: TrialConfig
    spec: TaskSpec
    data: TaskData
    device: torch.device
    student: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    student_shape: Shape
    #: teacher name -> knowledge type -> module (its projections and layer map)
    knowledge: nn.ModuleDict
    teachers: list[Teacher]
    cache_mode: str

    @property
    def types(self) -> tuple[str, ...]:
        """The run's active knowledge types, in config order."""
        first = next(iter(self.knowledge.values()), None)
        return tuple(first.keys()) if isinstance(first, nn.ModuleDict) else ()

    def module(self, teacher: int, kind: str) -> Knowledge:
        modules = self.knowledge[module_key(self.teachers[teacher].name if self.teachers else "")]
        assert isinstance(modules, nn.ModuleDict)
        m = modules[kind]
        assert isinstance(m, Knowledge)
        return m

    @property
    def feature_index(self) -> int | None:
        """The teacher of the knowledge types other than soft labels (knowledge.feature_teacher);
        None when every teacher may teach them (top, weighted)."""
        ft = self.cfg.knowledge.feature_teacher
        if ft in ("top", "weighted"):
            return None
        return [t.name for t in self.teachers].index(ft) if ft else 0

    def serves(self, i: int, kind: str) -> bool:
        """Whether teacher i may teach knowledge type `kind` (every teacher teaches soft labels
        and reads nothing for hard ones)."""
        m = self.module(i, kind)
        if not m.needs_teacher:
            return False
        return m.policy_weighted or self.feature_index in (None, i)

    def student_needs(self, kinds: Any, policy: bool = False) -> Needs:
        """What the student's forward pass must return for these knowledge types (and its
        last-layer [CLS] when the teacher policy reads it: `policy`)."""
        needs = Needs()
        for k in kinds:
            needs = needs | self.module(0, k).student_needs
        if policy:
            needs = needs | Needs(hidden=frozenset({self.student_shape.layers}))
        return needs

    def teacher_needs(self, i: int, kinds: Any) -> Needs:
        """What teacher i must give for these knowledge types, as far as it teaches them (and
        the agent's [CLS], from the first teacher)."""
        needs = Needs()
        for k in kinds:
            if self.serves(i, k):
                needs = needs | self.module(i, k).teacher_needs
        if i == 0 and SELECTORS[self.cfg.selector.kind].needs_cls:
            needs = needs | Needs(hidden=frozenset({self.teachers[0].shape.layers}))
        return needs

    def teacher_features(
        self, batch: dict[str, torch.Tensor], kinds: Any, which: Any = None
    ) -> dict[str, Features]:
        """Teachers' outputs for this batch (`which`: their indices; None: all), as far as
        `kinds` read them from each."""
        bf16 = self.cfg.trainer.bf16
        return {
            t.name: t.features(batch, self.teacher_needs(i, kinds), self.device, bf16)
            for i, t in enumerate(self.teachers)
            if which is None or i in which
        }

    def losses(
        self,
        batch: dict[str, torch.Tensor],
        weights: dict[str, float],
        policy: TeacherPolicy,
        step: int,
    ) -> dict[str, torch.Tensor]:
        """The loss of each knowledge type with a positive weight, reduced over the batch.

        One teacher: the plain batch mean. A pool: the policy's per-example weights w (B, n)
        scale each teacher's per-example soft loss before the batch mean; the other types come
        from knowledge.feature_teacher (one teacher, the per-example top-weighted one, or every
        teacher weighted by w). Only teachers with some weight are computed. Types that read
        no teacher run once."""
        active = [k for k in self.types if weights[k] > 0]
        if not active:
            return {}
        reading = [k for k in active if self.module(0, k).needs_teacher]
        pooled = len(self.teachers) > 1 and bool(reading)
        with autocast(self.device, self.cfg.trainer.bf16):
            student = encode(
                self.student, batch, self.student_needs(active, pooled and policy.reads_student_cls)
            )
        out = {k: self.module(0, k)(student, None, batch).mean() for k in active
               if k not in reading}  # fmt: skip
        if not reading:
            return out
        if not pooled:
            t = self.teacher_features(batch, reading)[self.teachers[0].name]
            return {**out, **{k: self.module(0, k)(student, t, batch).mean() for k in reading}}
        feats = self.teacher_features(batch, reading) if policy.reads_teachers else {}
        w = policy.weights(BatchView(step, batch, student.detached(), feats))
        assert w is not None
        shape = (len(batch["labels"]), len(self.teachers))
        if tuple(w.shape) != shape:
            raise ValueError(f"teacher weights have shape {tuple(w.shape)}, not {shape}")
        per_kind = {k: self.kind_weights(k, w).to(self.device) for k in reading}
        used = {i for m in per_kind.values() for i in range(shape[1]) if bool(m[:, i].any())}
        missing = [i for i in sorted(used) if self.teachers[i].name not in feats]
        feats.update(self.teacher_features(batch, reading, missing) if missing else {})
        for k, m in per_kind.items():
            out[k] = torch.stack([
                self.module(i, k)(student, feats[t.name], batch).mean(m[:, i])
                for i, t in enumerate(self.teachers) if bool(m[:, i].any())
            ] or [student.logits.new_zeros(())]).sum()  # fmt: skip
        return out

    def kind_weights(self, kind: str, w: torch.Tensor) -> torch.Tensor:
        """(B, n) weights of each teacher in knowledge type `kind`'s loss: the policy's for
        soft labels (and for every type with feature_teacher: weighted), one-hot on the
        per-example top teacher (top) or on the feature teacher."""
        if self.module(0, kind).policy_weighted or self.cfg.knowledge.feature_teacher == "weighted":
            return w
        i = self.feature_index
        top = w.argmax(1) if i is None else torch.full((len(w),), i)
        return default_float(torch.nn.functional.one_hot(top, len(self.teachers)))


def module_key(teacher: str) -> str:
    """The knowledge modules of a teacher live under this key (a teacher named like a module
    attribute, e.g. 'half', must not clash with it)."""
    return f"to:{teacher}" if teacher else "student"


def check_selector_data(cfg: TrialConfig, data: TaskData) -> None:
    """A run that measures the reward-split loss needs enough examples there."""
    if not (measures_reward(cfg.selector) or measures_reward_split(cfg) or cfg.probe.enabled):
        return
    have = len(data.reward)
    need = max(MIN_REWARD_EXAMPLES, cfg.selector.reward_examples or 0)
    who = (f"selector '{cfg.selector.kind}'" if measures_reward(cfg.selector)
           else "teacher_policy.reward r3" if measures_reward_split(cfg)
           else "probe (counterfactual probes)")  # fmt: skip
    if have < MIN_REWARD_EXAMPLES:
        raise ConfigError(
            f"{who} measures the reward split, which has {have} "
            f"examples; it needs at least {MIN_REWARD_EXAMPLES} to measure a loss drop. Raise "
            f"data.reward_fraction (now {cfg.data.reward_fraction}) or "
            f"data.max_train_examples so that reward_fraction x train >= {need}"
        )


def setup(
    cfg: TrialConfig,
    teacher_paths: Mapping[str, str] | str | None = None,
    progress: bool = False,
    teacher_outputs: Mapping[str, TeacherOutputs] | TeacherOutputs | None = None,
) -> Setup:
    """Check everything that HF configs and data sizes can tell, then load data and models.

    `teacher_paths`: teacher name -> fine-tuned folder (or one path for a one-teacher run);
    teachers with `path` in the config need none. `teacher_outputs`: outputs a sweep shares
    (name -> outputs, or one for a one-teacher run); the others are prepared here."""
    cfg = check_trial(cfg)
    torch.manual_seed(cfg.trainer.seed)  # student init and projections follow trainer.seed
    spec = spec_of(cfg.data)
    device = pick_device(cfg.trainer.device)
    if device.type == "cpu":
        reuse_freed_cpu_memory()
    if cfg.student.init == "pretrained":  # fine-tuning the backbone itself: no teacher
        return _setup_pretrained(cfg, spec, device, progress)
    _, data, tokenizer, s_shape, teachers, knowledge = _pool(cfg, teacher_paths, progress)
    s = Setup(cfg, spec, data, device, None, tokenizer, s_shape, knowledge, teachers, "off")
    kinds = s.types
    first = teachers[0]
    t0_needs = s.teacher_needs(0, kinds)
    if cfg.student.init == "remap":
        first.model = load_classifier(first.path, eager=bool(t0_needs.attn_probs))
        first.model.to(device).eval().requires_grad_(False)
    s.student = build_student(
        cfg.student,
        first.config,
        spec,
        teacher=first.model,
        eager=bool(s.student_needs(kinds).attn_probs),
    )
    s.student.to(device)
    knowledge.to(device)
    s.cache_mode = _teacher_outputs(s, progress, teacher_outputs)
    return s


def _pool(
    cfg: TrialConfig, teacher_paths: Mapping[str, str] | str | None, progress: bool
) -> tuple[TaskSpec, TaskData, Any, Shape, list[Teacher], nn.ModuleDict]:
    """Preflight, data, and each teacher with its knowledge modules (layer map, projections)."""
    spec = spec_of(cfg.data)
    paths = named_paths(cfg, teacher_paths)
    s_shape, configs = preflight(cfg, spec, paths)
    pool = cfg.teacher_list()
    tokenizer = AutoTokenizer.from_pretrained(paths[pool[0].name or ""])
    data = load_task(cfg.data, tokenizer, cache_root(cfg), progress=progress)
    check_selector_data(cfg, data)
    teachers, modules = [], {}
    for t in pool:
        name = t.name or ""
        shape = Shape.of(configs[name])
        g = layer_map(cfg.student, shape.layers)
        teachers.append(Teacher(name, paths[name], configs[name], shape, g))
        ctx = KnowledgeContext(cfg.knowledge, spec.is_regression, s_shape, shape, g)
        modules[module_key(name)] = build_knowledge(ctx)
    return spec, data, tokenizer, s_shape, teachers, nn.ModuleDict(modules)


def shared_teacher_outputs(
    cfg: TrialConfig,
    teacher_paths: Mapping[str, str],
    progress: bool = False,
    every_role: bool = False,
) -> dict[str, TeacherOutputs]:
    """Each teacher's outputs that the trials of a sweep over `cfg` read, loaded or computed
    once, to share with every trial through Ray's object store: what the teacher teaches under
    `cfg` (its knowledge types and roles, and the first teacher's last-layer [CLS] an agent's
    state reads, whatever the selector), or, with `every_role` (the trials differ in which
    teacher teaches what: the pool or knowledge.feature_teacher is searched), what it could
    teach in any trial. A teacher whose outputs the cache settings or budget leave out is not
    shared."""
    cfg = check_trial(cfg)
    spec, data, tokenizer, s_shape, teachers, knowledge = _pool(cfg, teacher_paths, progress)
    device = pick_device(cfg.trainer.device)
    s = Setup(cfg, spec, data, device, None, tokenizer, s_shape, knowledge, teachers, "off")
    out = {}
    fits = CacheBudget(cfg, data)
    for i, t in enumerate(teachers):
        modules = knowledge[module_key(t.name)]
        assert isinstance(modules, nn.ModuleDict)
        needs = needs_of(modules)[1] if every_role else s.teacher_needs(i, s.types)
        if i == 0 or every_role:
            needs = needs | Needs(hidden=frozenset({t.shape.layers}))
        if not fits(t, needs):  # the trials run this teacher live (or cache it themselves)
            continue
        out[t.name] = _outputs(cfg, t, data, needs, device, progress)
    return out


def _outputs(
    cfg: TrialConfig,
    t: Teacher,
    data: TaskData,
    needs: Needs,
    device: torch.device,
    progress: bool,
) -> TeacherOutputs:
    """Teacher t's outputs `needs` on the train split, with the run's eval batch size and
    autocast: from the cache, or computed once (with its loaded model, if any)."""
    tr = cfg.trainer
    return prepare_outputs(
        t.path,
        data.train,
        data.fingerprint,
        needs,
        cache_root(cfg),
        model=t.model,
        batch_size=tr.eval_batch_size,
        device=device,
        progress=progress,
        autocast=device.type == "cuda" and tr.bf16,
    )


class CacheBudget:
    """trainer.teacher_cache (on/off) and one teacher_cache_max_mb for the whole pool: each
    teacher's outputs are charged in pool order; one that would go past it runs live."""

    def __init__(self, cfg: TrialConfig, data: TaskData) -> None:
        self.on, self.data = cfg.trainer.teacher_cache, data
        self.left = cfg.trainer.teacher_cache_max_mb * 2**20

    def __call__(self, t: Teacher, needs: Needs) -> bool:
        size = estimate_bytes(self.data.train, needs, t.shape.width, t.shape.heads)
        if not self.on or size > self.left:
            return False
        self.left -= size
        return True


def _teacher_outputs(
    s: Setup,
    progress: bool,
    shared: Mapping[str, TeacherOutputs] | TeacherOutputs | None,
) -> str:
    """Give each teacher its cached outputs (shared, from disk, or computed once) or, over
    the memory budget, its live model. Returns the cache mode for results.json."""
    cfg, tr = s.cfg, s.cfg.trainer
    if isinstance(shared, TeacherOutputs):
        shared = {s.teachers[0].name: shared}
    kinds = s.types
    modes = []
    fits = CacheBudget(cfg, s.data)
    for i, t in enumerate(s.teachers):
        needs = s.teacher_needs(i, kinds)
        reads = needs != Needs() or any(s.module(i, k).needs_teacher for k in kinds)
        if not reads:  # hard labels only: no teacher output is ever read
            modes.append("off")
        elif shared and t.name in shared:
            out = shared[t.name]
            if not out.matches(s.data.train, s.data.fingerprint) or not out.covers(needs):
                raise ConfigError(
                    f"the shared outputs of teacher '{t.name}' were computed for other training "
                    f"data or fewer teacher layers than this trial needs; compute them on this "
                    f"trial's train split (same task, max_length, split settings) for the union "
                    f"of the trials' knowledge"
                )
            t.outputs = out
            modes.append("cached (shared)")
        elif fits(t, needs):
            t.outputs = _outputs(cfg, t, s.data, needs, s.device, progress)
            modes.append("cached")
        else:
            if tr.teacher_cache:
                log.warning(
                    "teacher '%s' outputs would take the pool past "
                    "trainer.teacher_cache_max_mb=%d; running it live",
                    t.name,
                    tr.teacher_cache_max_mb,
                )
            if t.model is None:
                t.model = load_classifier(t.path, eager=bool(needs.attn_probs))
                t.model.to(s.device).eval().requires_grad_(False)
            modes.append("live (over budget)" if tr.teacher_cache else "off")
        if t.outputs is not None or not reads:
            t.model = None  # remap is done and every output is cached: free its memory
    if len(set(modes)) == 1:
        return modes[0]
    return ", ".join(f"{t.name}: {m}" for t, m in zip(s.teachers, modes, strict=True))


def _setup_pretrained(
    cfg: TrialConfig, spec: TaskSpec, device: torch.device, progress: bool
) -> Setup:
    """`student.init: pretrained`: the backbone fine-tuned on hard labels, no teacher."""
    from kdray.models.classifier import student_shape
    from kdray.models.source import check_max_length, model_sources

    source = resolve_backbone(cfg.teacher_list()[0].backbone)
    (src,) = model_sources(cfg)  # the backbone, now perhaps from the hub: checked before data
    config = load_config(source, src.where, src.fix)
    check_max_length(cfg.data.max_length, config, src.who)
    s_shape = student_shape(cfg.student, Shape.of(config))
    tokenizer = AutoTokenizer.from_pretrained(source)
    data = load_task(cfg.data, tokenizer, cache_root(cfg), progress=progress)
    check_selector_data(cfg, data)
    ctx = KnowledgeContext(cfg.knowledge, spec.is_regression, s_shape, s_shape, ())
    knowledge = nn.ModuleDict({"student": build_knowledge(ctx)})
    student = build_student(cfg.student, load_config(source), spec, backbone=source)
    student.to(device)
    return Setup(cfg, spec, data, device, student, tokenizer, s_shape, knowledge, [], "off")
