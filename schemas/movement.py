"""The MRR movement record published for every change of an account's MRR in one currency."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.money import Cents

MovementType = Literal["new", "expansion", "contraction", "churn", "reactivation"]
MOVEMENT_TYPES: tuple[MovementType, ...] = ("new", "expansion", "contraction", "churn", "reactivation")


class MovementRecord(BaseModel):
    """One movement, or the retraction of one.

    Correction rule: when a late event changes history, every movement it invalidates is published again
    as a ``retraction`` (same type, ``amount`` negated, ``sign`` -1, ``retracts`` naming it) and the
    corrected movements follow with ids of their own and ``corrects`` naming what they replace. Summing
    ``amount`` and ``sign`` per (month, currency, type) over the topic, each ``record_id`` once, gives
    the corrected totals.
    """

    model_config = ConfigDict(frozen=True, from_attributes=True)

    record_id: str | None = Field(
        default=None,
        description="On the movements topic: `{account_id}:{n}`, unique per published record and the same "
        "when a record is delivered again. Delivery is at-least-once: drop a record_id already seen.",
    )
    movement_id: str = Field(description="Deterministic: the same history always yields the same id.")
    record: Literal["movement", "retraction"] = "movement"
    account_id: str
    currency: str
    type: MovementType
    amount: Cents = Field(description="Size of the movement, positive; negative on a retraction.")
    sign: Literal[1, -1] = Field(
        default=1, description="+1, or -1 on a retraction: sum it to count movements."
    )
    mrr_before: Cents
    mrr_after: Cents
    effective_at: datetime = Field(description="The instant of the change, in UTC.")
    month: str = Field(pattern=r"^\d{4}-\d{2}$", description="UTC calendar month of effective_at.")
    event_ids: tuple[str, ...] = Field(description="The billing events that caused it: the audit trail.")
    retracts: str | None = Field(default=None, description="On a retraction: the movement it cancels.")
    corrects: tuple[str, ...] = Field(
        default=(), description="On a corrected movement: the movements retracted in the same correction."
    )
