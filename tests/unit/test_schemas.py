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


def test_the_bounds_show_in_the_billing_event_schema() -> None:
    from schemas.billing_event import MAX_INTERVAL_COUNT, MAX_ITEMS, MAX_MRR, MAX_QUANTITY

    event = schema_of(CONTRACTS["billing-event.v1"])
    props, item = event["properties"], event["$defs"]["Item"]["properties"]
    assert item["quantity"]["minimum"] == 0 and item["quantity"]["maximum"] == MAX_QUANTITY
    assert props["interval_count"]["minimum"] == 1
    assert props["interval_count"]["maximum"] == MAX_INTERVAL_COUNT
    items = next(v for v in props["items"]["anyOf"] if v.get("type") == "array")
    assert items["minItems"] == 1 and items["maxItems"] == MAX_ITEMS
    for name in ("event_id", "account_id", "subscription_id"):
        assert props[name]["maxLength"] == 128
    assert "1970-01-01T00:00:00Z" in props["effective_at"]["description"]
    assert "3000-01-01T00:00:00Z" in props["effective_at"]["description"]
    assert f"{MAX_MRR:,}.00" in props["items"]["description"]
    assert f"{MAX_MRR:,}.00" in event["description"]


def test_amount_patterns_are_ascii() -> None:
    # \d is any Unicode digit in the Rust regex engine and in Python's; [0-9] is not.
    text = json.dumps(schema_of(CONTRACTS["billing-event.v1"]))
    assert "\\\\d" not in text
    event = schema_of(CONTRACTS["billing-event.v1"])
    assert event["$defs"]["Item"]["properties"]["unit_amount"]["pattern"] == r"^[0-9]{1,12}(\.[0-9]{1,6})?$"
