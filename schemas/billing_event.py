"""Billing event contract v1: the JSON object producers put on the input topic, one per event."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

EventType = Literal["subscribe", "upgrade", "downgrade", "change", "cancel", "reactivate", "pause", "resume"]
Interval = Literal["day", "week", "month", "quarter", "year"]

# Events that state the subscription's full recurring terms after the event.
TERMS_REQUIRED: frozenset[str] = frozenset({"subscribe", "upgrade", "downgrade", "change"})
# Events that may restate the terms, or carry none so that the last terms apply again.
TERMS_OPTIONAL: frozenset[str] = frozenset({"reactivate", "resume"})
_TERM_FIELDS = ("currency", "interval", "items")

# Money travels as a JSON string so that it never passes through a binary float.
Amount = Annotated[str, StringConstraints(pattern=r"^\d{1,12}(\.\d{1,6})?$", strict=True)]
Percent = Annotated[str, StringConstraints(pattern=r"^\d{1,3}(\.\d{1,4})?$", strict=True)]
NonEmptyId = Annotated[str, StringConstraints(min_length=1, max_length=128, strict=True)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$", strict=True)]


class FieldError(ValueError):
    """A rule across fields that still names the one field a producer has to fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class _Contract(BaseModel):
    # strict: a JSON number is never coerced to a string or a timestamp, "3" never to an int.
    # extra="ignore": tax_amount, one_time_fees and fields of later versions are accepted and ignored.
    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")


class Item(_Contract):
    plan_id: NonEmptyId
    unit_amount: Amount = Field(description="Price per billing interval, a decimal string.")
    quantity: int = Field(default=1, ge=0)


class Discount(_Contract):
    """A recurring discount: percent_off applies first, then amount_off per billing interval."""

    percent_off: Percent | None = None
    amount_off: Amount | None = None

    @model_validator(mode="after")
    def _check(self) -> Discount:
        if self.percent_off is not None and Decimal(self.percent_off) > 100:
            raise FieldError("percent_off", "must be between 0 and 100")
        return self


class BillingEvent(_Contract):
    event_id: NonEmptyId = Field(
        description="Deduplication key: a repeated id with the same content is a no-op."
    )
    type: EventType
    account_id: NonEmptyId
    subscription_id: NonEmptyId
    effective_at: AwareDatetime = Field(description="RFC 3339 timestamp with an offset (Z or +hh:mm).")
    currency: Currency | None = None
    interval: Interval | None = None
    interval_count: int = Field(default=1, ge=1)
    items: list[Item] | None = Field(default=None, min_length=1)
    discount: Discount | None = None
    trial: bool = False

    @model_validator(mode="after")
    def _check_terms(self) -> BillingEvent:
        if self.type in TERMS_REQUIRED:
            for name in _TERM_FIELDS:
                if getattr(self, name) is None:
                    raise FieldError(name, f"required for a {self.type} event")
        elif self.type in TERMS_OPTIONAL:
            given = [name for name in _TERM_FIELDS if getattr(self, name) is not None]
            if given and len(given) != len(_TERM_FIELDS):
                missing = next(n for n in _TERM_FIELDS if getattr(self, n) is None)
                raise FieldError(missing, f"required when a {self.type} event restates the terms")
        return self

    @property
    def has_terms(self) -> bool:
        return self.items is not None and self.type not in ("cancel", "pause")
