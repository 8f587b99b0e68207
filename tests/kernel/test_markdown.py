from __future__ import annotations

from kernel.markdown import Line, lines


def test_headings_outside_fences_with_their_line_numbers() -> None:
    text = "# Title #\r\nprose\n```\n## not a heading\n```\n   ### Three ##\n####### seven\n#no"
    assert list(lines(text)) == [
        Line(1, "# Title #", 1, "Title"),
        Line(2, "prose", 0, ""),
        Line(6, "   ### Three ##", 3, "Three"),
        Line(7, "####### seven", 0, ""),
        Line(8, "#no", 0, ""),
    ]


def test_tilde_fences_hide_headings_too() -> None:
    assert [line.number for line in lines("~~~\n# code\n~~~\n# real")] == [4]
