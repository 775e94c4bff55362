"""MkDocs hooks: the configuration reference is generated from the code as the site builds
(`kdray.search.reference`), so the page cannot drift from the dataclasses it documents."""

from __future__ import annotations

from typing import Any

#: Where the generated reference goes in docs/reference/configuration.md.
MARKER = "<!-- generated: configuration reference -->"


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if MARKER not in markdown:
        return markdown
    from kdray.search.reference import markdown as reference

    return markdown.replace(MARKER, reference("##"))
