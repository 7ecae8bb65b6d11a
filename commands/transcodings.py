"""How the ledger's value objects are stored in events. The names are persisted: never change them."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.persistence import Transcoding

from ledger.payments import Payment
from ledger.pricing import Bill, Line
from ledger.reseller import CardOnFile


class LineAsDict(Transcoding):
    type = Line
    name = "invoice_line"

    def encode(self, obj: Line) -> dict[str, Any]:
        return dict(vars(obj))

    def decode(self, data: dict[str, Any]) -> Line:
        return Line(**data)


class BillAsDict(Transcoding):
    type = Bill
    name = "bill"

    def encode(self, obj: Bill) -> dict[str, Any]:
        return {**vars(obj), "lines": list(obj.lines)}

    def decode(self, data: dict[str, Any]) -> Bill:
        return Bill(**{**data, "lines": tuple(data["lines"])})


class PaymentAsDict(Transcoding):
    type = Payment
    name = "payment"

    def encode(self, obj: Payment) -> dict[str, Any]:
        return {"invoice_id": obj.invoice_id.hex, "reference": obj.reference}

    def decode(self, data: dict[str, Any]) -> Payment:
        return Payment(UUID(data["invoice_id"]), data["reference"])


class CardOnFileAsDict(Transcoding):
    type = CardOnFile
    name = "card_on_file"

    def encode(self, obj: CardOnFile) -> dict[str, Any]:
        return dict(vars(obj))

    def decode(self, data: dict[str, Any]) -> CardOnFile:
        return CardOnFile(**data)


ALL = (LineAsDict, BillAsDict, PaymentAsDict, CardOnFileAsDict)
