"""Raw bytes to a validated billing event, or a rejection that names the field to fix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from schemas.billing_event import BillingEvent, FieldError

RECORD = "(record)"  # the field named when the record as a whole is wrong: bad JSON, not an object
MAX_RECORD_BYTES = 1_000_000  # the default largest record applied, in the stream and the replay alike


@dataclass(frozen=True, slots=True)
class Rejection:
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


def _describe(error: Any) -> tuple[str, str]:
    loc = ".".join(str(part) for part in error["loc"])
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, FieldError):
        return (f"{loc}.{cause.field}" if loc else cause.field), cause.message
    message: str = error["msg"]
    if error["type"] == "missing":
        message = "field required"
    elif error["type"] == "json_invalid":
        message = f"invalid JSON ({error.get('ctx', {}).get('error', 'malformed')})"
    elif error["type"] in ("string_pattern_mismatch", "string_type") and loc.endswith(
        ("amount", "amount_off")
    ):
        message = (
            "must be a non-negative decimal string of ASCII digits, up to 12 before the point and up to "
            '6 places, such as "49.00" (never a JSON number)'
        )
    elif error["type"] in ("string_pattern_mismatch", "string_type") and loc.endswith("percent_off"):
        message = (
            'must be a decimal string of ASCII digits with up to 4 places such as "12.5" '
            "(never a JSON number)"
        )
    elif error["type"] == "string_pattern_mismatch" and loc.endswith("_id"):
        message = "must not contain control characters"
    elif error["type"] == "string_pattern_mismatch" and loc == "currency":
        message = "must be an ISO 4217 code of three uppercase letters such as USD"
    return (loc or RECORD), message


def rejection_from(error: ValidationError) -> Rejection:
    described = [_describe(e) for e in error.errors()]
    field = described[0][0]
    reason = "; ".join(msg if f == field else f"{f}: {msg}" for f, msg in described)
    return Rejection(field, reason)


def too_large(size: int, limit: int) -> Rejection | None:
    """A record over the size limit is rejected unread (stream and replay alike)."""
    if size <= limit:
        return None
    return Rejection(RECORD, f"{size:,} bytes, above the limit of {limit:,} (MRR_MAX_RECORD_BYTES)")


def parse_event(raw: bytes | str) -> BillingEvent | Rejection:
    """Validate one JSON document against the billing event contract v1."""
    try:
        return BillingEvent.model_validate_json(raw)
    except ValidationError as exc:
        return rejection_from(exc)
