"""Students from teacher configs: layer maps, remap init key by key, shape errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kdray.base.errors import ConfigError
from kdray.config import StudentConfig
from kdray.data.tasks import TASKS
from kdray.models.classifier import (
    Needs,
    Shape,
    build_student,
    encode,
    load_classifier,
    remap_sources,
    uniform_layer_map,
)
from kdray.models.source import check_teacher_task, load_config, random_teacher

SST2 = TASKS["sst2"]


def test_uniform_layer_map() -> None:
    assert uniform_layer_map(2, 6) == (3, 6)
    assert uniform_layer_map(4, 6) == (2, 3, 5, 6)
    assert uniform_layer_map(3, 12) == (4, 8, 12)
    # a student deeper than three times its teacher: never layer 0 (the embeddings)
    assert uniform_layer_map(4, 1) == (1, 1, 1, 1)
    assert uniform_layer_map(7, 2) == (1, 1, 1, 1, 1, 2, 2)
    assert uniform_layer_map(6, 6) == (1, 2, 3, 4, 5, 6)


def test_remap_sources_for_smaller_and_larger_students() -> None:
    assert remap_sources(2, 6, StudentConfig(num_layers=2)) == (3, 6)
    assert remap_sources(2, 6, StudentConfig(num_layers=2, layer_map=(1, 4))) == (1, 4)
    # larger than the teacher (DWT): i <- i while i <= M, later layers <- M
    assert remap_sources(4, 2, StudentConfig(num_layers=4)) == (1, 2, 2, 2)


def _weights_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_remap_copies_mapped_teacher_layers(tiny_teacher: str) -> None:
    teacher = load_classifier(tiny_teacher)
    student = build_student(StudentConfig(num_layers=1), load_config(tiny_teacher), SST2, teacher)
    # student layer 1 <- teacher layer g(1) = round(1 * 2 / 1) = 2
    assert _weights_equal(student.bert.encoder.layer[0], teacher.bert.encoder.layer[1])
    assert _weights_equal(student.bert.embeddings, teacher.bert.embeddings)
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)


def test_remap_larger_student(tiny_teacher: str) -> None:
    teacher = load_classifier(tiny_teacher)
    student = build_student(StudentConfig(num_layers=3), load_config(tiny_teacher), SST2, teacher)
    layers = student.bert.encoder.layer
    assert _weights_equal(layers[0], teacher.bert.encoder.layer[0])
    assert _weights_equal(layers[2], teacher.bert.encoder.layer[1])


def test_random_init_other_width_and_heads(tiny_teacher: str) -> None:
    cfg = StudentConfig(
        num_layers=2, hidden_size=16, num_heads=2, intermediate_size=24, init="random"
    )
    student = build_student(cfg, load_config(tiny_teacher), SST2)
    assert Shape.of(student.config) == Shape(2, 16, 2, 24, "bert")


def test_distilbert_student_encodes_hidden_states(tiny_teacher: str) -> None:
    cfg = StudentConfig(architecture="distilbert", num_layers=2, init="random")
    student = build_student(cfg, load_config(tiny_teacher), SST2)
    batch = {
        "input_ids": torch.tensor([[101, 2009, 102, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 0]]),
    }
    feats = encode(student, batch, Needs(hidden=frozenset({0, 2})))
    assert feats.logits.shape == (1, 2) and feats.hidden[2].shape == (1, 4, 32)


@pytest.mark.parametrize(
    ("cfg", "needle"),
    [
        (StudentConfig(hidden_size=16), r"hidden_size \(32\)"),
        (StudentConfig(intermediate_size=64), r"intermediate_size \(37\)"),
        (StudentConfig(architecture="distilbert"), "must be a bert"),
        (StudentConfig(num_heads=3), "must divide"),
        (StudentConfig(init="pretrained", num_layers=3), "backbone as it is"),
        (StudentConfig(init="pretrained", num_layers=1, num_heads=2), "backbone as it is"),
    ],
)
def test_incompatible_student_shapes(tiny_teacher: str, cfg: StudentConfig, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        build_student(cfg, load_config(tiny_teacher), SST2, load_classifier(tiny_teacher))


def test_teacher_label_count_must_match_task(tmp_path: Path, tokenizer_dir: str) -> None:
    path = random_teacher(tmp_path / "t3", tokenizer_dir, num_labels=3)
    with pytest.raises(ConfigError, match="3 labels but sst2 needs 2"):
        check_teacher_task(path, load_config(path), SST2)
    check_teacher_task(path, load_config(path), TASKS["mnli"])  # 3 labels: fine


def test_missing_teacher_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not found \(no such folder\)"):
        load_config(str(tmp_path / "nowhere"))


def test_encode_captures_attention_context(tiny_teacher: str) -> None:
    model = load_classifier(tiny_teacher, eager=True).eval()
    batch = {
        "input_ids": torch.tensor([[101, 2009, 2003, 102]]),
        "attention_mask": torch.ones(1, 4, dtype=torch.long),
    }
    needs = Needs(hidden=frozenset({1}), attn_probs=frozenset({2}), attn_context=frozenset({2}))
    feats = encode(model, batch, needs)
    assert feats.attn_probs[2].shape == (1, 4, 4, 4)
    assert torch.allclose(feats.attn_probs[2].sum(-1), torch.ones(1, 4, 4))
    # the context is the self-attention output before its output projection: merge(P @ V)
    value = model.bert.encoder.layer[1].attention.self.value(feats.hidden[1])  # (1, 4, 32)
    v = value.view(1, 4, 4, 8).transpose(1, 2)  # (1, H, T, 8)
    expected = (feats.attn_probs[2] @ v).transpose(1, 2).reshape(1, 4, 32)
    torch.testing.assert_close(feats.attn_context[2], expected, rtol=1e-5, atol=1e-6)
