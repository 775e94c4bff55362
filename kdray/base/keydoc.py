"""Every key a nested config dataclass accepts, with its type, default, allowed values and
one-line documentation: the source of the generated configuration reference.

A field's documentation is the `#:` comment block right above it in the class body (the
convention Sphinx reads too), so the dataclass stays the one place a key is described:
adding a field with its comment documents it, and a field without one has an empty `doc`
(a test refuses that). `config_keys` walks what `kdray.base.strict` reads: nested sections,
optional sections, lists of sections (`teachers[].name`) and mappings of sections
(`knowledge.schedules.<name>.kind`).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import re
import textwrap
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from kdray.base.strict import _plain, type_hints

__all__ = ["Key", "config_keys", "field_docs", "render_default", "render_type"]

_DOC = re.compile(r"^\s*#:(.*)$")


@dataclass(frozen=True)
class Key:
    """One accepted key: its dotted path, type, default, allowed values and documentation."""

    path: str
    type: str
    #: The default as YAML writes it; "required" for a field without one.
    default: str
    allowed: tuple[str, ...]
    doc: str
    #: A key holding a section (its own keys follow it).
    section: bool = False


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Field name -> the `#:` comment lines right above its annotation in `cls`'s body (no
    blank line between), joined into one line; "" for a field without them."""
    source = textwrap.dedent(inspect.getsource(cls))
    lines = source.splitlines()
    body = ast.parse(source).body[0]
    assert isinstance(body, ast.ClassDef)
    docs: dict[str, str] = {}
    for node in body.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            block: list[str] = []
            i = node.lineno - 2  # the line above the field, 0-based
            while i >= 0 and (m := _DOC.match(lines[i])):
                block.insert(0, m.group(1).strip())
                i -= 1
            docs[node.target.id] = " ".join(block)
    return {f.name: docs.get(f.name, "") for f in dataclasses.fields(cls)}


def _strip_none(tp: Any) -> tuple[Any, bool]:
    """(the annotation without None, whether None is allowed)."""
    if get_origin(tp) in (typing.Union, types.UnionType):
        inner = [a for a in get_args(tp) if a is not type(None)]
        return inner[0], len(inner) < len(get_args(tp))  # configs: one type, maybe None
    return tp, False


def render_type(tp: Any) -> str:
    """An annotation as a reader of a YAML file thinks of it ("int or null", "list of str")."""
    inner, optional = _strip_none(tp)
    origin, args = get_origin(inner), get_args(inner)
    if dataclasses.is_dataclass(inner):
        text = "section"
    elif origin is Literal:
        text = "str"
    elif origin is tuple:
        text = f"list of {render_type(args[0]).replace('section', 'sections')}"
    elif origin in (Mapping, dict) or inner is Mapping:
        value = render_type(args[1]) if args else "any"
        text = f"mapping of str to {value}"
    elif inner is Any:
        text = "any"
    else:
        text = getattr(inner, "__name__", str(inner))
    return f"{text} or null" if optional else text


def render_default(value: Any) -> str:
    """A default as YAML writes it (`null`, `true`, `[hard, soft]`, `{}`)."""
    import yaml

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return "(section)"
    return (
        yaml.safe_dump(_plain(value), default_flow_style=True, width=10_000)
        .strip()
        .removesuffix("\n...")
        .removesuffix(" ...")
    )


def _default(f: dataclasses.Field[Any]) -> str:
    if f.default is not dataclasses.MISSING:
        return render_default(f.default)
    if f.default_factory is not dataclasses.MISSING:
        return render_default(f.default_factory())
    return "required"


def _section_of(tp: Any) -> tuple[Any, str]:
    """(the dataclass a key's value holds, the path suffix its keys go under): "." for a section,
    "[]." for a list of sections, ".<name>." for a mapping of them; (None, "") for a leaf."""
    inner, _ = _strip_none(tp)
    origin, args = get_origin(inner), get_args(inner)
    if dataclasses.is_dataclass(inner):
        return inner, "."
    if origin is tuple and args and dataclasses.is_dataclass(args[0]):
        return args[0], "[]."
    if origin in (Mapping, dict) and len(args) == 2 and dataclasses.is_dataclass(args[1]):
        return args[1], ".<name>."
    return None, ""


def _summary(cls: type) -> str:
    """A section class's docstring, its first paragraph on one line ("" for none: not the
    signature `dataclass` writes in its place)."""
    doc = cls.__doc__ or ""
    if doc.startswith(cls.__name__ + "("):
        return ""
    return " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())


def config_keys(
    cls: type,
    prefix: str = "",
    allowed: Mapping[str, Iterable[str]] | None = None,
) -> list[Key]:
    """Every key `cls` accepts (sections first, then their keys), in declaration order.

    `allowed` maps a key's path to the names it accepts where the annotation cannot say (a
    registry such as the selector kinds); a `Literal` annotation gives them itself."""
    allowed = allowed or {}
    hints = type_hints(cls)
    docs = field_docs(cls)
    keys: list[Key] = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        path = prefix + f.name
        inner, _ = _strip_none(tp)
        choices: tuple[str, ...] = ()
        if get_origin(inner) is Literal:
            choices = tuple(map(str, get_args(inner)))
        elif get_origin(inner) is tuple and get_origin(get_args(inner)[0]) is Literal:
            choices = tuple(map(str, get_args(get_args(inner)[0])))
        if path in allowed:
            choices = tuple(allowed[path])
        sub, suffix = _section_of(tp)
        doc = docs[f.name] or (_summary(sub) if sub is not None else "")
        keys.append(Key(path, render_type(tp), _default(f), choices, doc, sub is not None))
        if sub is not None:
            keys += config_keys(sub, path + suffix, allowed)
    return keys
