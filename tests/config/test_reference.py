"""The configuration reference generated from the code: every key documented, and the keys it
lists exactly the keys a trial config and a sweep file accept."""

from __future__ import annotations

import copy
import dataclasses
import re
from typing import Any

import pytest
import yaml

from kdray.base.errors import ConfigError
from kdray.base.keydoc import Key, config_keys, field_docs
from kdray.base.strict import _build
from kdray.config import TrialConfig, config_paths
from kdray.search.reference import markdown, sweep_keys, trial_keys
from kdray.search.spec import DISTRIBUTION_DOCS, DISTRIBUTIONS, SweepConfig
from kdray.search.sweep_file import SECTIONS, parse_sweep

#: Values for keys without a default (the strict reader checks types, not meaning).
REQUIRED = {"float": 0.5, "int": 1, "str": "x", "bool": True}


def every_key() -> list[Key]:
    return trial_keys() + sweep_keys()


def test_every_key_has_a_doc_line() -> None:
    missing = [k.path for k in every_key() if not k.doc.strip()]
    assert not missing, f"keys without a `#:` doc line above their field: {missing}"


def parts(path: str) -> list[str]:
    """A reference path's steps into nested data: "[]" is a list's first item, "<name>" a
    mapping's entry ("soft")."""
    return ["soft" if p == "<name>" else p for p in path.replace("[]", ".[]").split(".")]


def sample(keys: list[Key], prefix: str) -> dict[str, Any]:
    """Nested plain data that sets every leaf key under `prefix` (its default, or a value of
    its type for a required one): one item for a list of sections, one entry ("soft") for a
    mapping of them."""
    raw: dict[str, Any] = {}
    for k in keys:
        if k.section or not k.path.startswith(prefix):
            continue
        value = REQUIRED[k.type] if k.default == "required" else yaml.safe_load(k.default)
        *parents, leaf = parts(k.path.removeprefix(prefix))
        node: Any = raw
        for i, part in enumerate(parents):
            if part != "[]":
                nxt = parents[i + 1] if i + 1 < len(parents) else None
                node = node.setdefault(part, [{}] if nxt == "[]" else {})
            if isinstance(node, list):
                node = node[0]
        node[leaf] = value
    return raw


def reader_keys(cls: type, raw: dict[str, Any], section: str) -> set[str]:
    """The keys the strict reader itself says a section accepts: put an unknown key in it and
    read the "valid keys" of the error."""
    raw = copy.deepcopy(raw)
    node: Any = raw
    for part in parts(section) if section else []:
        node = node[0] if part == "[]" else node[part]
    node["not_a_key"] = 1
    with pytest.raises(ConfigError) as err:
        _build(cls, raw, "")
    match = re.search(r"valid keys(?: in [^:]+)?: (.*)$", str(err.value))
    assert match, str(err.value)
    return set(match.group(1).split(", "))


def listed_under(keys: list[Key], section: str) -> set[str]:
    """The names of the keys the reference lists right under a section."""
    out = set()
    for k in keys:
        for sep in (".", "[].", ".<name>."):
            head = section + sep if section else ""
            rest = k.path.removeprefix(head)
            if k.path.startswith(head) and rest and not re.search(r"[.\[]", rest):
                out.add(rest)
    return out


def check_against_reader(cls: type, keys: list[Key]) -> None:
    """Each section's listed keys are the ones the strict reader accepts there, every listed
    key set at once is read without complaint, and every section is checked."""
    raw = sample(keys, "")
    _build(cls, raw, "")  # every listed key is a real key
    for k in [Key("", "section", "", (), ""), *(k for k in keys if k.section)]:
        inside = k.path + ("[]" if "list" in k.type else ".<name>" if "mapping" in k.type else "")
        assert listed_under(keys, k.path) == reader_keys(cls, raw, inside), k.path or "top"


def test_reference_lists_exactly_the_trial_keys() -> None:
    keys = trial_keys()
    check_against_reader(TrialConfig, keys)
    assert set(config_paths()) <= {k.path for k in keys}  # every searchable path


def test_reference_lists_exactly_the_sweep_keys() -> None:
    keys = sweep_keys()
    assert [k.path for k in keys if "." not in k.path] == list(SECTIONS)
    section = [Key(k.path.removeprefix("sweep."), k.type, k.default, k.allowed, k.doc, k.section)
               for k in keys if k.path.startswith("sweep.")]  # fmt: skip
    check_against_reader(SweepConfig, section)
    with pytest.raises(ConfigError, match="valid: name, trial, search, sweep"):
        parse_sweep({"serach": {}}, "x")
    assert set(DISTRIBUTION_DOCS) == set(DISTRIBUTIONS)


def test_a_field_without_a_doc_line_is_caught() -> None:
    @dataclasses.dataclass(frozen=True)
    class Section:
        #: Documented.
        kept: int = 1
        # a plain comment is not documentation
        bare: str = "x"

    assert field_docs(Section) == {"kept": "Documented.", "bare": ""}
    rows = {k.path: k for k in config_keys(Section, "s.")}
    assert rows["s.kept"].doc == "Documented." and rows["s.kept"].default == "1"
    assert rows["s.bare"].doc == ""


def test_allowed_values_come_from_the_code() -> None:
    from kdray.selector import SELECTORS

    rows = {k.path: k for k in every_key()}
    assert rows["selector.kind"].allowed == tuple(SELECTORS)
    assert rows["student.init"].allowed == ("random", "remap", "pretrained")
    assert rows["teachers[].backbone"].default == "minilm"
    assert rows["knowledge.schedules.<name>.kind"].allowed == ("constant", "linear", "cosine")


def test_markdown_shows_every_key() -> None:
    text = markdown()
    missing = [k.path for k in every_key() if f"`{k.path}`" not in text]
    assert not missing
    assert "| `trainer.max_steps` | int | `300` |" in text
