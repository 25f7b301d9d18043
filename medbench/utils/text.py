"""Plain text from docstrings, for terminal output."""

from __future__ import annotations

import re

_ROLE = re.compile(r":(?:[a-z]+:)?[a-z]+:`(~?[^`<]+?)(?:\s*<[^>]+>)?`")
_LITERAL = re.compile(r"``([^`]+)``")
_EMPH = re.compile(r"(?<![\w*])\*{1,2}([^*\s][^*]*?)\*{1,2}(?![\w*])")


def plain_doc(text: str) -> str:
    """Drop reStructuredText markup: ``:func:`name``` -> ``name``, double backquotes, ``*emphasis*``."""
    text = _ROLE.sub(lambda m: m.group(1)[1:].rsplit(".", 1)[-1] if m.group(1).startswith("~") else m.group(1), text)
    text = _LITERAL.sub(r"\1", text)
    return _EMPH.sub(r"\1", text)


def split_list(values: list[str] | tuple[str, ...] | str | None) -> list[str]:
    """Values of a repeatable option (``--source a --source b``); a comma inside one value also
    separates items, so the older comma style keeps working. Blank items are dropped."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return [item.strip() for v in values for item in str(v).split(",") if item.strip()]
