"""The engine's movement value. Same fields as the wire contract schemas.movement.MovementRecord
(to_record builds one), but a NamedTuple: the replay creates one per change, and a pydantic model or a
frozen dataclass costs several times as much."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, NamedTuple

from pydantic_core import to_json

from schemas.money import format_cents
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


def _utc_text(at: datetime) -> str:
    text = at.isoformat()
    if text.endswith("+00:00"):  # UTC, as the engine makes every instant
        return text[:-6] + "Z"
    return f"{at.replace(tzinfo=None).isoformat()}Z"


def record_dict(movement: Movement, record_id: str | None = None) -> dict[str, object]:
    """to_record(...).model_dump(mode="json") without pydantic, for the hot path (the stream renders every
    record it publishes and every chunk it writes to Redis); a test holds the two equal."""
    return {
        "record_id": record_id,
        "movement_id": movement.movement_id,
        "record": movement.record,
        "account_id": movement.account_id,
        "currency": movement.currency,
        "type": movement.type,
        "amount": format_cents(movement.amount),
        "sign": movement.sign,
        "mrr_before": format_cents(movement.mrr_before),
        "mrr_after": format_cents(movement.mrr_after),
        "effective_at": _utc_text(movement.effective_at),
        "month": movement.month,
        "event_ids": list(movement.event_ids),
        "retracts": movement.retracts,
        "corrects": list(movement.corrects),
    }


def record_json(movement: Movement, record_id: str | None = None) -> str:
    """The wire text of a record, exactly as to_record(...).model_dump_json() writes it."""
    return to_json(record_dict(movement, record_id)).decode()
