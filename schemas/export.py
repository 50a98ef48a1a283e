"""Write the contracts as JSON Schema files for downstream consumers: `python -m schemas.export`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from schemas.aggregate import MonthlyAggregate
from schemas.billing_event import BillingEvent
from schemas.movement import MovementRecord
from schemas.scheduled import ScheduledChanges

JSON_DIR = Path(__file__).parent / "json"
CONTRACTS: dict[str, type[BaseModel]] = {
    "billing-event.v1": BillingEvent,
    "mrr-movement.v1": MovementRecord,
    "monthly-aggregate.v1": MonthlyAggregate,
    "scheduled-changes.v1": ScheduledChanges,
}


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    # Serialization mode: what a consumer reads off the wire (money as strings, ratios as strings).
    mode: Literal["validation", "serialization"] = "validation" if model is BillingEvent else "serialization"
    return model.model_json_schema(mode=mode)


def rendered() -> dict[Path, str]:
    return {
        JSON_DIR / f"{name}.schema.json": json.dumps(schema_of(model), indent=2, sort_keys=True) + "\n"
        for name, model in CONTRACTS.items()
    }


def main() -> int:
    JSON_DIR.mkdir(exist_ok=True)
    for path, text in rendered().items():
        path.write_text(text)
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
