"""Scheduled changes: what the billing events already known will do to MRR after now (contract v1)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from schemas.money import Cents
from schemas.movement import MovementRecord, MovementType


class ScheduledTotal(BaseModel):
    model_config = ConfigDict(frozen=True)

    currency: str
    type: MovementType = Field(
        description="new or reactivation (MRR scheduled to start), expansion, contraction or churn."
    )
    amount: Cents = Field(description="The MRR these scheduled movements move, positive.")
    movements: int
    accounts: tuple[str, ...] = Field(description="The accounts behind the amount, sorted.")


class ScheduledChanges(BaseModel):
    """The movements that events effective after `as_of` will cause up to `until`, as the events known
    now foretell them (a later event may still change them), summed per currency and type."""

    model_config = ConfigDict(frozen=True)

    as_of: datetime = Field(description="Now: every movement listed is effective after it.")
    until: datetime = Field(description="The window's end, as_of plus `days` days.")
    days: int
    totals: tuple[ScheduledTotal, ...]
    movements: tuple[MovementRecord, ...] = Field(
        description="The scheduled movements in the window, by effective_at (at most `limit`)."
    )
    truncated: bool = Field(default=False, description="More movements than the limit are in the window.")
