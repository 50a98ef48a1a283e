"""The OpenAPI 3.1 description of the read API, its schemas taken from the pydantic contracts."""

from __future__ import annotations

from typing import Any

from processors.core.scheduled import MAX_DAYS
from schemas.aggregate import MonthlyAggregate, PeriodAggregate
from schemas.billing_event import MAX_ID_LENGTH
from schemas.movement import MovementRecord
from schemas.scheduled import ScheduledChanges, ScheduledTotal


def _schema(model: Any) -> dict[str, Any]:
    schema: dict[str, Any] = model.model_json_schema(
        mode="serialization", ref_template="#/components/schemas/{model}"
    )
    schema.pop("$defs", None)
    return schema


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERROR_SCHEMA = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "parameter": {"type": "string"}},
    "required": ["error"],
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR_SCHEMA}}}


_ERROR = _error("Bad parameter: `parameter` names it, and `error` starts with its name")
_UNAVAILABLE = _error("Redis is unavailable; try again shortly")
_MONTH = {"type": "string", "pattern": r"^\d{4}-(0[1-9]|1[0-2])$"}
_CURRENCY = {"type": "string", "pattern": "^[A-Z]{3}$"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_UNAUTHORIZED = _error(
    "A bearer token is required (the API runs with MRR_API_TOKEN) and none or a wrong one came"
)


def openapi() -> dict[str, Any]:
    """Every path needs the bearer token when the API is configured with one; this description is open."""
    document = _document()
    for operations in document["paths"].values():
        for operation in operations.values():
            operation["responses"]["401"] = _UNAUTHORIZED
    return document


def _document() -> dict[str, Any]:
    months = {"type": "array", "items": _ref("MonthlyAggregate")}
    period = {
        "type": "object",
        "properties": {
            "current": {"anyOf": [_ref("PeriodAggregate"), {"type": "null"}]},
            "previous_year": {"anyOf": [_ref("PeriodAggregate"), {"type": "null"}]},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mrr-stream read API",
            "version": "1",
            "description": "Exact MRR figures kept in Redis by the mrr-stream worker. Money is a decimal "
            "string with two places; ratios a decimal string with four places or null.",
        },
        "paths": {
            "/api/current": {
                "get": {
                    "summary": "Current MRR, customers and the latest month per currency",
                    "responses": {
                        "200": _ok(
                            "The latest month of each currency",
                            {
                                "type": "object",
                                "properties": {
                                    "as_of": {"anyOf": [_MONTH, {"type": "null"}]},
                                    "rejected": {"type": "integer"},
                                    "currencies": months,
                                },
                            },
                        ),
                        "503": _UNAVAILABLE,
                    },
                }
            },
            "/api/months": {
                "get": {
                    "summary": "Monthly aggregates for a range of months",
                    "parameters": [
                        {"name": "from", "in": "query", "schema": _MONTH},
                        {"name": "to", "in": "query", "schema": _MONTH},
                        {"name": "currency", "in": "query", "schema": _CURRENCY},
                    ],
                    "responses": {
                        "200": _ok(
                            "Months, by currency then month",
                            {"type": "object", "properties": {"months": months}},
                        ),
                        "400": _ERROR,
                        "503": _UNAVAILABLE,
                    },
                }
            },
            "/api/periods": {
                "get": {
                    "summary": "Quarter- and year-to-date roll-ups, with the same period a year before",
                    "parameters": [
                        {"name": "currency", "in": "query", "schema": _CURRENCY},
                        {
                            "name": "month",
                            "in": "query",
                            "schema": _MONTH,
                            "description": "the last month of the periods; default the latest",
                        },
                    ],
                    "responses": {
                        "200": _ok(
                            "qtd and ytd per currency",
                            {
                                "type": "object",
                                "properties": {
                                    "as_of": {"anyOf": [_MONTH, {"type": "null"}]},
                                    "currencies": {
                                        "type": "object",
                                        "additionalProperties": {
                                            "type": "object",
                                            "properties": {"qtd": period, "ytd": period},
                                        },
                                    },
                                },
                            },
                        ),
                        "400": _ERROR,
                        "503": _UNAVAILABLE,
                    },
                }
            },
            "/api/accounts/{account_id}": {
                "get": {
                    "summary": "One account's current MRR and a page of its movements in effect, oldest "
                    "first: the latest page, or the one before `before` (the previous page's next_before)",
                    "parameters": [
                        {
                            "name": "account_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 5000, "default": 500},
                        },
                        {
                            "name": "before",
                            "in": "query",
                            "description": "the next_before of the previous page",
                            "schema": {"type": "string", "pattern": "^[0-9]{1,17}$"},
                        },
                    ],
                    "responses": {
                        "200": _ok(
                            "The account",
                            {
                                "type": "object",
                                "properties": {
                                    "account_id": {"type": "string"},
                                    "mrr": {"type": "object", "additionalProperties": {"type": "string"}},
                                    "movements": {"type": "array", "items": _ref("MovementRecord")},
                                    "next_before": {
                                        "type": ["string", "null"],
                                        "description": "cursor of the next (older) page; null on the first",
                                    },
                                },
                            },
                        ),
                        "400": _ERROR,
                        "404": _error("No such account"),
                        "503": _UNAVAILABLE,
                    },
                }
            },
            "/api/movements/latest": {
                "get": {
                    "summary": "The latest movement records, newest first",
                    "parameters": [
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
                        }
                    ],
                    "responses": {
                        "200": _ok(
                            "Movement records",
                            {
                                "type": "object",
                                "properties": {
                                    "movements": {"type": "array", "items": _ref("MovementRecord")}
                                },
                            },
                        ),
                        "400": _ERROR,
                        "503": _UNAVAILABLE,
                    },
                }
            },
            "/api/scheduled": {
                "get": {
                    "summary": "Scheduled changes: the movements that events already known, effective after "
                    "now, will cause in the next `days` days, summed per currency and type (a forecast from "
                    "what is known: a later event may still change it)",
                    "parameters": [
                        {
                            "name": "days",
                            "in": "query",
                            "description": "the window, from now",
                            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_DAYS, "default": 30},
                        },
                        {"name": "currency", "in": "query", "schema": _CURRENCY},
                    ],
                    "responses": {
                        "200": _ok(
                            "Totals per currency and type, and the movements by instant",
                            _ref("ScheduledChanges"),
                        ),
                        "400": _ERROR,
                        "503": _UNAVAILABLE,
                    },
                }
            },
            "/api/events": {
                "get": {
                    "summary": "Server-sent events: `update` whenever the figures change",
                    "responses": {"200": {"description": "text/event-stream"}},
                }
            },
        },
        "components": {
            "schemas": {
                "MonthlyAggregate": _schema(MonthlyAggregate),
                "PeriodAggregate": _schema(PeriodAggregate),
                "MovementRecord": _schema(MovementRecord),
                "ScheduledTotal": _schema(ScheduledTotal),
                "ScheduledChanges": _schema(ScheduledChanges),
            },
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "one of the tokens in MRR_API_TOKEN; not needed when it is not set",
                }
            },
        },
        # the empty alternative: a deployment without MRR_API_TOKEN needs no credentials
        "security": [{"bearer": []}, {}],
    }
