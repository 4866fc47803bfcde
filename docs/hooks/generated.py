"""mkdocs hook: the pages generated from the code, filled in when the site is built.

A page marks where a generated block goes with an HTML comment, ``<!-- generated: NAME -->``; the
block comes from the installed dermstack, so the site can never disagree with the code it documents.
Text up to ``<!-- end generated -->`` after the marker is replaced too: what the page's source file
says in its place where no site is built (read on GitHub, the file would otherwise end empty).
"""
from __future__ import annotations

import re

from dermstack.catalogue import markdown as kinds_markdown
from dermstack.config import reference

# The kinds listing escapes a pipe inside a code span for GitHub's tables; Python-Markdown keeps it literal.
GENERATORS = {"kinds": lambda: kinds_markdown().replace(r"\|", "|"), "config": reference.markdown}
_MARKER = re.compile(r"<!-- generated: (\w+) -->(?:.*?<!-- end generated -->)?", re.S)


def on_page_markdown(markdown: str, **_) -> str:
    def block(m: re.Match) -> str:
        if m.group(1) not in GENERATORS:
            raise KeyError(f"no generator {m.group(1)!r}; known: {sorted(GENERATORS)}")
        return GENERATORS[m.group(1)]()
    return _MARKER.sub(block, markdown)
