"""A griffe extension for the API reference (mkdocs.yml loads it): the code's
docstrings use reST roles (``:class:`~sansquic.Config```, ``:meth:`send```) and
double backticks; Markdown shows those literally, so they become plain code."""

from __future__ import annotations

import re
from typing import Any

try:
    import griffe

    _Extension: type = griffe.Extension
except ImportError:  # the tests use markdown() without the docs extra installed
    _Extension = object

# :role:`~a.b.C` or :role:`a.b.C` or :role:`text <a.b.C>`: the name a reader knows.
_ROLE = re.compile(r":(?:class|meth|func|attr|mod|data|exc|obj|const):`~?([^`<]*?)(?: <[^>]*>)?`")
_DOUBLE = re.compile(r"``([^`]+)``")


def markdown(text: str) -> str:
    """``text`` with reST roles and double-backtick literals as Markdown code."""

    def role(match: re.Match[str]) -> str:
        name = match[1]
        return f"`{name.rsplit('.', 1)[-1] if match[0].find('~') >= 0 else name}`"

    return _DOUBLE.sub(r"`\1`", _ROLE.sub(role, text)).replace("::\n", ":\n")


class ReSTRoles(_Extension):  # type: ignore[misc]
    """Rewrite each docstring as it is loaded."""

    def on_object(self, *, obj: Any, loader: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)
