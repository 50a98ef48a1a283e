"""The engine's movement value. Same fields as the wire contract schemas.movement.MovementRecord
(to_record builds one), but a NamedTuple: the replay creates one per change, and a pydantic model or a
frozen dataclass costs several times as much."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, NamedTuple

from schemas.movement import MovementRecord, MovementType


class Movement(NamedTuple):
    movement_id: str
    account_id: str
    currency: str
    type: MovementType
    amount: int  # cents, negative on a retraction
    mrr_before: int
    mrr_after: int
    effective_at: datetime  # UTC
    month: str
    event_ids: tuple[str, ...]
    record: Literal["movement", "retraction"] = "movement"
    sign: Literal[1, -1] = 1
    retracts: str | None = None
    corrects: tuple[str, ...] = ()


def retraction_of(movement: Movement) -> Movement:
    return movement._replace(
        movement_id=f"{movement.movement_id}-r",
        record="retraction",
        amount=-movement.amount,
        sign=-1,
        retracts=movement.movement_id,
        corrects=(),
    )


def to_record(movement: Movement, record_id: str | None = None) -> MovementRecord:
    """The wire contract of a movement; record_id is set when it is published on the movements topic."""
    return MovementRecord.model_validate({**movement._asdict(), "record_id": record_id})
