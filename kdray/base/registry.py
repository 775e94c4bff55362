"""kdray's one registry style: every pluggable family (knowledge types, selectors, teacher
policies, recipes, schedulers, searchers, loggers) is one table, a dict from the name a config
uses to its member, in the family's package. Members that are classes carry that name as their
`name` class attribute and the table is built from them with `name_table`; members that import
Ray, Optuna or a tracker are factories that import on call. A new member is one class (or file)
and one line in its table; `kdray.base.errors.unknown` refuses a name not in it.
"""

from __future__ import annotations

from typing import Protocol, TypeVar


class Named(Protocol):
    name: str


T = TypeVar("T", bound=Named)


def name_table(*members: T) -> dict[str, T]:
    """{member.name: member} in the order given; two members of one name are a bug here."""
    table = {m.name: m for m in members}
    if len(table) != len(members):
        raise ValueError(f"two members share a name: {[m.name for m in members]}")
    return table
