"""The configuration reference: every key a trial config and a sweep file accept, with its
type, default, allowed values and one-line documentation.

It is generated from the code, so it cannot drift from it: the keys, types and defaults from
the config dataclasses (`kdray.base.keydoc`), the documentation from the `#:` comment above
each field, the allowed values from the `Literal` annotations and the registries (selectors,
knowledge types, searchers, ...). The docs site includes it at build time;
`python -m kdray.search.reference` prints it as Markdown.
"""

from __future__ import annotations

from collections.abc import Iterable

from kdray.base.keydoc import Key, config_keys
from kdray.config import TrialConfig
from kdray.config.recipes import RECIPES
from kdray.data.tasks import TASKS

__all__ = ["markdown", "sweep_keys", "trial_keys"]


def _registries() -> dict[str, Iterable[str]]:
    """Key -> the names it accepts, for keys whose annotation is a plain str."""
    from kdray.data.metrics import METRICS
    from kdray.knowledge import KNOWLEDGE_TYPES
    from kdray.search.schedulers import SCHEDULERS
    from kdray.search.searchers import SEARCHERS
    from kdray.search.spec import GENERIC_METRICS
    from kdray.search.tracking import LOGGERS
    from kdray.selector import SELECTORS
    from kdray.teacher_policy import POLICIES

    return {
        "recipe": RECIPES,
        "data.task": TASKS,
        "data.dataset.metrics": METRICS,
        "knowledge.types": KNOWLEDGE_TYPES,
        "stages[].types": KNOWLEDGE_TYPES,
        "selector.kind": SELECTORS,
        "teacher_policy.kind": POLICIES,
        "sweep.metric": [*GENERIC_METRICS, "val_<metric>"],
        "sweep.searcher": SEARCHERS,
        "sweep.scheduler": SCHEDULERS,
        "sweep.loggers": LOGGERS,
    }


def trial_keys() -> list[Key]:
    """Every key of a trial config (a trial file, or a sweep file's `trial` section)."""
    return config_keys(TrialConfig, "", _registries())


def sweep_keys() -> list[Key]:
    """Every key of a sweep file besides those under `trial` (which are `trial_keys()`)."""
    from kdray.search.spec import DISTRIBUTION_DOCS, SweepConfig
    from kdray.search.sweep_file import SECTIONS

    docs = " ".join(DISTRIBUTION_DOCS.values())
    return [
        Key("name", "str", "the file's name", (), SECTIONS["name"]),
        Key("trial", "section", "(section)", (), SECTIONS["trial"], section=True),
        Key(
            "search",
            "mapping of str to distribution",
            "{}",
            tuple(DISTRIBUTION_DOCS),
            f"{SECTIONS['search']} {docs}",
        ),
        Key("sweep", "section", "(section)", (), SECTIONS["sweep"], section=True),
        *config_keys(SweepConfig, "sweep.", _registries()),
    ]


def _cell(text: str) -> str:
    """Text for a table cell: pipes escaped, and angle brackets outside `code` (val_<metric>)
    shown rather than read as HTML."""
    parts = text.replace("|", "\\|").replace("\n", " ").split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;") for i, p in enumerate(parts))


def _table(keys: list[Key]) -> list[str]:
    rows = ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    for k in keys:
        doc = k.doc
        if k.allowed:
            doc += " One of: " + ", ".join(f"`{a}`" for a in k.allowed) + "."
        rows.append(f"| `{k.path}` | {k.type} | `{_cell(k.default)}` | {_cell(doc)} |")
    return rows


def _by_section(keys: list[Key], level: str) -> list[str]:
    """A table of the top-level leaves, then one heading and table per top-level section."""
    out: list[str] = []
    top = [k for k in keys if "." not in k.path and not k.section]
    if top:
        out += [*_table(top), ""]
    for sec in (k for k in keys if k.section and "." not in k.path.removesuffix("[]")):
        inner = [k for k in keys if k.path.startswith((sec.path + ".", sec.path + "[]."))]
        out += [f"{level} `{sec.path}`", "", _cell(sec.doc), "", *_table(inner), ""]
    return out


def markdown(heading: str = "##") -> str:
    """The reference as Markdown: the trial config's sections, then the sweep file's."""
    sweep = [k for k in sweep_keys() if k.path != "trial"]
    lines = [
        f"{heading} Trial config",
        "",
        "A trial file (`python -m kdray.train --config FILE`), a sweep file's `trial` section and "
        "`--set KEY=VALUE` take these keys. A key not given keeps its default; null is "
        "YAML's None.",
        "",
        *_by_section(trial_keys(), heading + "#"),
        f"{heading} Sweep file",
        "",
        "A sweep file (`python -m kdray.sweep --space FILE`) has four sections: `name`, `trial` "
        "(the keys above), `search` and `sweep`.",
        "",
        *_by_section(sweep, heading + "#"),
    ]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(markdown("#"))
