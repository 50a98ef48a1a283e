"""Money on the wire: integer cents inside Python, a decimal string with two places in JSON."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

CENTS_PATTERN = r"^-?\d+\.\d{2}$"


def format_cents(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(cents), 100)
    return f"{sign}{whole}.{frac:02d}"


def parse_cents(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("money must be a decimal string such as '12.34'")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        d = Decimal(value)
        if d != d.quantize(Decimal("0.01")):
            raise ValueError("money has more than two decimal places")
        return int(d * 100)
    raise ValueError("money must be a decimal string such as '12.34'")


Cents = Annotated[
    int,
    BeforeValidator(parse_cents),
    PlainSerializer(format_cents, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": CENTS_PATTERN, "description": "Exact money, two places."}),
]


def format_ratio(value: Decimal | None) -> str | None:
    return None if value is None else f"{value:.4f}"


Ratio = Annotated[
    Decimal | None,
    PlainSerializer(format_ratio, return_type=str | None, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "pattern": r"^-?\d+\.\d{4}$"}, {"type": "null"}],
            "description": "A ratio to four places, null where its denominator is zero.",
        }
    ),
]
