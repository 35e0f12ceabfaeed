"""Error lines a user reads: one line, bounded in length, quoting values without rendering them whole."""
from __future__ import annotations

from typing import Any

MAX_LINE = 400       # characters of an error line, whatever the value it quotes


def one_line(err: BaseException | str, limit: int = MAX_LINE) -> str:
    """An error message as one bounded line, whatever the raiser wrote."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[:limit - 1] + "…"


def shown(value: Any, limit: int = 80) -> str:
    """repr of a user's value, cut to `limit` characters (built piecewise: a huge value is never rendered whole)."""
    import reprlib

    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxdict = 3, 8, 8
    short.maxstring = short.maxother = short.maxlong = limit
    text = short.repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"
