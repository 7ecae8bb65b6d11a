"""Text the ledger can keep, decided at the door: one NUL in a stored name once stopped PostgreSQL's read
models for every reseller (its text columns and JSONB refuse U+0000), and a lone surrogate cannot be
encoded as UTF-8 at all. The other control characters, tab and newline included, are refused too: they
corrupt logs, exports and terminals, and no field of the contract holds text that spans lines."""

from __future__ import annotations

import re
from typing import Any

from pydantic_core import PydanticCustomError

# Unicode category Cc (C0 controls, DEL, C1 controls) and Cs (surrogates: in a Python string, unpaired).
_UNSTORABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def unstorable(text: str) -> str | None:
    """Why ``text`` is refused (without echoing it), or None when it can be stored."""
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    code_point = ord(found.group())
    kind = "a lone surrogate" if 0xD800 <= code_point <= 0xDFFF else "a control character"
    return f"must not contain {kind} (U+{code_point:04X} at offset {found.start()})"


def refuse_unstorable(value: Any) -> None:
    """A validation error (which pydantic reports on the field being validated) when any text in ``value``,
    however deeply nested in lists and objects, keys included, cannot be stored."""
    pending = [value]  # a loop, not recursion: a deeply nested value must not exhaust the stack
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if why := unstorable(item):
                raise PydanticCustomError("unstorable_text", why)
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
