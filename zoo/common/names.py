"""Close matches for a mistyped name, so every "unknown X" error can say what
was probably meant (difflib's ratio, the same cut-offs everywhere)."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


def close_matches(name, names: Iterable, n: int = 3, cutoff: float = 0.4) -> list[str]:
    """Up to `n` of `names` most like `name`, best first."""
    return difflib.get_close_matches(str(name), [str(x) for x in names], n=n, cutoff=cutoff)


def did_you_mean(name, names: Iterable, n: int = 3, cutoff: float = 0.4, *, joiner: str = ", ",
                 quote: bool = False) -> str:
    """'did you mean a, b?' naming the close matches, or '' where none is close."""
    close = close_matches(name, names, n, cutoff)
    if not close:
        return ""
    return f"did you mean {joiner.join(repr(c) if quote else c for c in close)}?"
