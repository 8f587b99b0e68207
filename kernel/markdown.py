"""The little Markdown the kernel reads: ATX headings, outside fenced code blocks.

Contract templates (heading conformance) and requirements documents (negotiation) are Markdown
written by people. Both must agree on what a heading is (``#`` to ``######``, up to three
spaces of indent, closing ``#``s dropped) and that a ``#`` line inside a ``` or ~~~ fence is
code, not a heading.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple

_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t#]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")


class Line(NamedTuple):
    """A line outside code fences: its 1-based number, its text, and for a heading its level
    (0 for any other line) and title."""

    number: int
    text: str
    level: int
    title: str


def lines(text: str) -> Iterator[Line]:
    """Every line of `text` outside fenced code blocks (the fence lines themselves included
    in neither), numbered as an editor numbers them."""
    fenced = False
    for number, raw in enumerate(text.replace("\r\n", "\n").split("\n"), start=1):
        if _FENCE.match(raw):
            fenced = not fenced
            continue
        if fenced:
            continue
        heading = _HEADING.match(raw)
        if heading:
            yield Line(number, raw, len(heading.group(1)), heading.group(2))
        else:
            yield Line(number, raw, 0, "")
