import json

from schemas.export import CONTRACTS, rendered, schema_of


def test_committed_json_schemas_match_the_models() -> None:
    for path, text in rendered().items():
        assert path.exists(), f"{path.name} missing: run python -m schemas.export"
        assert path.read_text() == text, f"{path.name} is stale: run python -m schemas.export"


def test_money_is_a_string_on_the_wire() -> None:
    event = schema_of(CONTRACTS["billing-event.v1"])
    item = event["$defs"]["Item"]["properties"]["unit_amount"]
    assert item["type"] == "string" and "pattern" in item
    movement = schema_of(CONTRACTS["mrr-movement.v1"])
    assert movement["properties"]["amount"]["type"] == "string"
    assert set(json.loads(json.dumps(movement))["required"]) >= {
        "movement_id",
        "account_id",
        "amount",
        "month",
    }
