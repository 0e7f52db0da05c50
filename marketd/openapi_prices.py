"""The OpenAPI description of the prices going out (/prices, /prices.csv, /prices/history):
schemas and paths that :mod:`marketd.openapi` merges into its document, built from the
parameter schemas it shares."""

from __future__ import annotations

from typing import Any

JSON = "application/json"
Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    return {**schema, "nullable": True}


def ok_json(description: str, schema: Schema) -> Schema:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def query_param(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


PRICE_SCHEMAS: dict[str, Schema] = {
    "Price": {
        "type": "object",
        "required": ["provider", "sku", "size", "currency", "lowest_ask", "highest_bid",
                     "last_sale", "fetched_at"],
        "properties": {
            "provider": {"type": "string"},
            "sku": {"type": "string"},
            "size": nullable({"type": "string"}),
            "currency": {"type": "string"},
            **{k: nullable({"type": "string", "pattern": r"^-?[0-9]+\.[0-9]{2}$",
                             "description": "major units, e.g. \"96.00\""})
               for k in ("lowest_ask", "highest_bid", "last_sale")},
            "fetched_at": {"type": "string", "description": "ISO-8601 UTC"},
            **{k: nullable({"type": "string", "description": f"the product's {k} from a "
                                                              "provider's catalog, if known"})
               for k in ("title", "brand", "colourway", "image_url")},
            "extra": {"type": "object",
                      "description": "the provider's other amounts in the price's currency "
                                     "(StockX: flex_lowest_ask, earn_more, sell_faster)",
                      "additionalProperties": {"type": "string"}},
            "fx": {"type": "object",
                   "description": "only with [fx] rates: the amounts in the home currency; "
                                  "converted says whether a rate was used (null amounts: no "
                                  "rate for this currency)",
                   "properties": {"currency": {"type": "string"},
                                  "converted": {"type": "boolean"},
                                  **{k: nullable({"type": "string"}) for k in
                                     ("lowest_ask", "highest_bid", "last_sale")}}},
        },
    },
    "HistoryPoint": {
        "type": "object",
        "required": ["fetched_at", "currency", "lowest_ask", "highest_bid", "last_sale"],
        "properties": {
            "fetched_at": {"type": "string", "description": "when this price was first seen "
                                                            "(ISO-8601 UTC)"},
            "currency": {"type": "string"},
            **{k: nullable({"type": "string", "pattern": r"^-?[0-9]+\.[0-9]{2}$"})
               for k in ("lowest_ask", "highest_bid", "last_sale")},
        },
    },
}


# /status's parts about what marketd keeps and sends out
STATUS_DATA: dict[str, Schema] = {
    "webhooks": {
        "type": "object",
        "description": "the price-change outbox: deliveries pending, delivered and "
                       "given up (dead); failing: pending ones that failed at least "
                       "once; recent_failures: the newest of those, and the dead",
        "properties": {**{k: {"type": "integer"} for k in
                          ("pending", "delivered", "dead", "failing")},
                       "recent_failures": {"type": "array",
                                           "items": {"type": "object"}}}},
    "database": {
        "type": "object", "required": ["size_bytes", "wal_bytes", "rows"],
        "description": "the database's size, SQLite's WAL file (null on PostgreSQL) "
                       "and rows per table (counted at most every 30 s)",
        "properties": {"size_bytes": {"type": "integer"},
                       "wal_bytes": nullable({"type": "integer"}),
                       "rows": {"type": "object",
                                "additionalProperties": {"type": "integer"}}}},
}


def price_paths(*, sku: Schema, size: Schema, provider: Schema, size_system: Schema,
                bad: Schema) -> dict[str, Schema]:
    """/prices, /prices.csv and /prices/history."""
    filters: list[Schema] = [
        query_param("provider", provider, "only this provider"),
        {**query_param("sku", {"type": "array", "items": sku, "maxItems": 1000},
                  "only these SKUs (repeat: sku=A&sku=B)"), "style": "form", "explode": True},
        query_param("size", {"type": "string", "maxLength": 16,
                        "pattern": size["oneOf"][0]["pattern"]}, "only this size"),
        query_param("size_system", size_system, "the system of `size`"),
        query_param("user_id", {"type": "string", "minLength": 1, "maxLength": 128},
               "only the keys this user's jobs asked for"),
        query_param("cursor", {"type": "string", "maxLength": 600},
               "start after the row a previous page's next_cursor names"),
        query_param("limit", {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1000},
               "at most this many rows in this page"),
    ]

    return {
    "/prices": {"get": {
        "summary": "Latest prices, a page at a time",
        "operationId": "prices",
        "description": "In (sku, provider, size) order. When more rows match than "
                       "`limit`, `next_cursor` is set and `next` is this request for the "
                       "next page; both are null on the last page: nothing is cut "
                       "silently.",
        "parameters": filters,
        "responses": {
            "200": ok_json("the prices", {
                "type": "object", "required": ["prices", "next_cursor"],
                "properties": {
                    "prices": {"type": "array", "items": ref("Price")},
                    "next_cursor": nullable({"type": "string"}),
                    "next": nullable({"type": "string",
                                       "description": "the next page's path and query"}),
                }}),
            "400": bad,
        },
    }},
    "/prices.csv": {"get": {
        "summary": "Latest prices as CSV",
        "operationId": "prices_csv",
        "description": "The rows /prices gives, as CSV with the header `provider,sku,"
                       "size,currency,lowest_ask,highest_bid,last_sale,fetched_at` (more "
                       "columns after): every matching row unless `limit` asks for one "
                       "page, whose next page is then named by the `Link: <...>; "
                       "rel=\"next\"` and `X-Next-Cursor` headers.",
        "parameters": filters,
        "responses": {
            "200": {"description": "CSV, a header line then a line per price",
                    "content": {"text/csv": {"schema": {"type": "string"}}}},
            "400": bad,
        },
    }},
    "/prices/history": {"get": {
        "summary": "One price's history, oldest first: a point per change",
        "operationId": "price_history",
        "description": "A fetch that finds the same price adds no point; the latest "
                       "price's `fetched_at` in /prices says when it was last confirmed.",
        "parameters": [
            {**query_param("provider", provider, "the provider"), "required": True},
            {**query_param("sku", sku, "the SKU"), "required": True},
            query_param("size", {"type": "string", "maxLength": 16,
                            "pattern": size["oneOf"][0]["pattern"]},
                   "the size (absent: the size-less price)"),
            query_param("size_system", size_system, "the system of `size`"),
            query_param("since", {"type": "string", "format": "date-time"},
                   "only points from this time on (ISO-8601 with a zone)"),
        ],
        "responses": {
            "200": ok_json("the points", {
                "type": "object", "required": ["history"],
                "properties": {"provider": {"type": "string"}, "sku": {"type": "string"},
                               "size": nullable({"type": "string"}),
                               "history": {"type": "array",
                                           "items": ref("HistoryPoint")}}}),
            "400": bad,
        },
    }},    }
