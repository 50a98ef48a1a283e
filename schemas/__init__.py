"""The contracts: pydantic models of every record mrr-stream reads or writes, exported as JSON Schema."""

from schemas.aggregate import MonthlyAggregate, ReplayResult
from schemas.billing_event import BillingEvent, Discount, FieldError, Item
from schemas.movement import MOVEMENT_TYPES, MovementRecord, MovementType

__all__ = [
    "MOVEMENT_TYPES",
    "BillingEvent",
    "Discount",
    "FieldError",
    "Item",
    "MonthlyAggregate",
    "MovementRecord",
    "MovementType",
    "ReplayResult",
]
