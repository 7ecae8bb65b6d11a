from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar
from uuid import UUID

from fastapi import Response

from commands.errors import NotFound
from commands.handlers import Outcome

T = TypeVar("T")

POSITION_HEADER = "X-Ledger-Position"
REPLAYED_HEADER = "Idempotent-Replayed"


def answer(response: Response, outcome: Outcome[Any], render: Callable[[Any], T]) -> T:
    """The body of a command's answer, with where its change sits in the event log."""
    if outcome.position is not None:
        response.headers[POSITION_HEADER] = str(outcome.position)
    if outcome.replayed:
        response.headers[REPLAYED_HEADER] = "true"
    return render(outcome.aggregate)


def subscription_id(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise NotFound(f"no subscription {text}") from None
