"""The OpenAPI 3 description of marketd's HTTP API (INTERFACE.md §4), as plain data.

:func:`openapi_spec` builds it; the web app serves it at ``GET /openapi.json``. A test keeps it
true: every route of :func:`marketd.web.create_app` is described here and nothing else is, and a
schemathesis run against a live server finds no 5xx and no answer that breaks these schemas.
Schemas say what a well-formed request looks like; anything else gets a ``400`` (or ``401``,
``413``) with ``{"error", "field"}``, never a ``5xx``.
"""

from __future__ import annotations

import copy
from typing import Any

from marketd import __version__
from marketd.models import JOB_STATUSES, MAX_BATCH_JOBS, MAX_PRIORITY, MIN_PRIORITY, PROVIDERS
from marketd.openapi_prices import (  # with the schema helpers both documents use
    JSON,
    PRICE_SCHEMAS,
    STATUS_DATA,
    Schema,
    nullable,
    ok_json,
    price_paths,
    query_param,
    ref,
)

FORM = "application/x-www-form-urlencoded"
HTML = "text/html"



_SKU: Schema = {
    "type": "string", "minLength": 1, "maxLength": 64,
    # at least one non-space; runs of spaces collapse, letters are upper-cased
    "pattern": r"^ *[A-Za-z0-9._/-][A-Za-z0-9 ._/-]*$",
    "description": "1-64 characters after trimming: letters, digits, space, - . / _ "
                   "(stored upper-cased).",
    "example": "DD1391-100",
}
_SIZE: Schema = {
    "nullable": True,
    "description": "A number in halves or thirds with an optional W, Y or C suffix; null or "
                   "absent for a size-less product. UK unless size_system says otherwise.",
    "oneOf": [
        {"type": "string", "maxLength": 16,
         "pattern": r"^[0-9]{1,2}(\.5|\.0| ?[12]/3)? ?[WYCwyc]?$", "example": "10.5"},
        {"type": "number", "minimum": 0, "maximum": 99.5, "multipleOf": 0.5},
    ],
}
_PROVIDER: Schema = {"type": "string", "enum": list(PROVIDERS),
                     "description": "stockx, alias or ebay (any case)."}
_SIZE_SYSTEM: Schema = {"type": "string", "enum": ["UK", "US", "EU", "uk", "us", "eu"],
                        "default": "UK"}
_PRIORITY: Schema = {
    "description": "An integer 0-1000 or a name: manual 200, hot 150, background 100 (the "
                   "default).",
    "oneOf": [
        {"type": "integer", "minimum": MIN_PRIORITY, "maximum": MAX_PRIORITY},
        {"type": "string", "enum": ["manual", "hot", "background"]},
    ],
}
_USER_ID: Schema = {"type": "string", "minLength": 1, "maxLength": 128, "nullable": True}


def _job_props(size_keys: tuple[str, ...]) -> dict[str, Schema]:
    props: dict[str, Schema] = {"provider": _PROVIDER, "sku": _SKU}
    for key in size_keys:
        props[key] = _SIZE
    props.update({"size_system": _SIZE_SYSTEM, "priority": _PRIORITY, "user_id": _USER_ID})
    return props


def _batch(key: str, item: Schema, *, outer: dict[str, Schema], description: str) -> Schema:
    return {
        "type": "object",
        "description": description,
        "required": [key],
        "additionalProperties": False,
        "properties": {key: {"type": "array", "minItems": 1, "maxItems": MAX_BATCH_JOBS,
                             "items": item}, **outer},
    }


def _error(description: str) -> Schema:
    return {"description": description, "content": {JSON: {"schema": ref("Error")}}}


def _html(description: str) -> Schema:
    return {"description": description, "content": {HTML: {"schema": {"type": "string"}}}}


_BAD = _error("bad input: `error` says what is wrong, `field` where (e.g. `jobs[3].size`); "
              "nothing was changed")
_UNAUTHORIZED = _error("a wrong or missing secret")
_TOO_LARGE = _error("the body is over 1 MiB")
_UNAVAILABLE = _error("the database did not answer; try again shortly")
_CRON: list[dict[str, list[str]]] = [{"cronSecret": []}]

_SCHEMAS: dict[str, Schema] = {
    "Error": {
        "type": "object", "required": ["error", "field"],
        "properties": {"error": {"type": "string"},
                       "field": {"type": "string", "nullable": True}},
    },
    "Job": {
        "type": "object", "required": ["provider", "sku"], "additionalProperties": False,
        "properties": _job_props(("size",)),
    },
    "Jobs": _batch("jobs", ref("Job"), outer={},
                   description=f"Up to {MAX_BATCH_JOBS} jobs, accepted whole or not at all."),
    "Items": _batch(
        "items",
        {"type": "object", "required": ["sku"],
         "description": "An inventory item; keys other than these are ignored.",
         "properties": {k: v for k, v in _job_props(("size_uk", "size")).items()}},
        outer={"provider": _PROVIDER, "priority": _PRIORITY, "user_id": _USER_ID,
               "size_system": _SIZE_SYSTEM},
        description="The seed's enqueueForItems: `provider` outside or in every item.",
    ),
    "Refresh": _batch(
        "refresh",
        {"type": "object", "required": ["sku"],
         "description": "Keys other than these are ignored.",
         "properties": {k: v for k, v in _job_props(("size", "size_uk")).items()
                        if k != "priority"}},
        outer={"provider": _PROVIDER, "user_id": _USER_ID, "size_system": _SIZE_SYSTEM},
        description="The seed's enqueueRefresh: always manual priority (200).",
    ),
    "EnqueueResult": {
        "type": "object",
        "required": ["id", "dedupe_key", "status", "priority", "deduplicated"],
        "properties": {
            "id": {"type": "string", "nullable": True,
                   "description": "null when status is fresh"},
            "dedupe_key": {"type": "string", "example": "stockx|DD1391-100|10"},
            "status": {"type": "string", "enum": ["pending", "running", "fresh"]},
            "priority": {"type": "integer", "minimum": MIN_PRIORITY, "maximum": MAX_PRIORITY},
            "deduplicated": {"type": "boolean"},
        },
    },
    "StoredJob": {
        "type": "object",
        "required": ["id", "provider", "sku", "size", "priority", "status", "retry_count",
                     "dedupe_key", "created_at"],
        "properties": {
            "id": {"type": "string"},
            "user_id": nullable({"type": "string"}),
            "provider": {"type": "string"},
            "sku": {"type": "string"},
            "size": nullable({"type": "string"}),
            "size_system": {"type": "string"},
            "priority": {"type": "integer"},
            "status": {"type": "string", "enum": list(JOB_STATUSES)},
            "error_message": nullable({"type": "string"}),
            "retry_count": {"type": "integer", "minimum": 0},
            "started_at": nullable({"type": "string"}),
            "completed_at": nullable({"type": "string"}),
            "dedupe_key": {"type": "string"},
            "created_at": {"type": "string"},
            "next_attempt_at": nullable({"type": "string"}),
        },
    },
    **PRICE_SCHEMAS,  # marketd.openapi_prices
    "RunSummary": {
        "type": "object",
        "required": ["run_id", "trigger", "started_at", "finished_at", "selected", "succeeded",
                     "failed", "deferred", "outcome", "providers"],
        "properties": {
            "run_id": {"type": "integer"},
            "trigger": {"type": "string"},
            "started_at": {"type": "string"},
            "finished_at": {"type": "string"},
            "duration_ms": {"type": "integer"},
            "rescued": {"type": "integer"},
            "selected": {"type": "integer"},
            "succeeded": {"type": "integer"},
            "failed": {"type": "integer"},
            "deferred": {"type": "integer"},
            "calls": {"type": "integer"},
            "outcome": {"type": "string", "enum": ["idle", "ok", "partial"]},
            "providers": {"type": "object", "additionalProperties": {"type": "object"}},
        },
    },
    "Budget": {
        "type": "object",
        "required": ["limits", "paused", "paused_until", "pause_reason", "check_credential"],
        "properties": {
            "hour_window": nullable({"type": "string"}),
            "rate_limit": {"type": "integer"},
            "used": {"type": "integer"},
            "limits": {"type": "array", "items": {
                "type": "object", "required": ["limit", "window_s", "used", "remaining"],
                "properties": {"limit": {"type": "string"}, "window_s": {"type": "number"},
                               "used": {"type": "integer"},
                               "remaining": {"type": "integer"}}}},
            "next_free_at": {"type": "string"},
            "paused": {"type": "boolean"},
            "paused_until": nullable({"type": "string"}),
            "pause_reason": nullable({"type": "string"}),
            "check_credential": nullable({"type": "string",
                                           "description": "the credential to check"}),
            "calls": {"type": "integer"},
            "rate_limited": {"type": "integer"},
            "provider_quota": nullable({
                "type": "object", "required": ["remaining", "resets_at"],
                "description": "what the provider itself last said is left of the key's quota "
                               "(eBay's getRateLimits, read hourly); null where it says nothing",
                "properties": {"remaining": {"type": "integer"},
                               "resets_at": {"type": "string"}}}),
        },
    },
    "Status": {
        "type": "object",
        "required": ["now", "budgets", "jobs", "recent_runs", "recent_batches"],
        "properties": {
            "now": {"type": "string"},
            "budgets": {"type": "object", "additionalProperties": ref("Budget")},
            "jobs": {
                "type": "object", "required": ["by_provider", "total"],
                "properties": {
                    "by_provider": {"type": "object",
                                    "additionalProperties": ref("StatusCounts")},
                    "total": ref("StatusCounts"),
                },
            },
            "recent_runs": {"type": "array", "items": {"type": "object"}},
            "recent_batches": {"type": "array", "items": {"type": "object"}},
            **STATUS_DATA,  # database, webhooks (marketd.openapi_prices)
            "instances": {"type": "array", "items": ref("Instance"),
                          "description": "the daemons on the database, oldest first; lanes "
                                         "are the providers whose batches each runs"},
        },
    },
    "Instance": {
        "type": "object",
        "required": ["id", "host", "pid", "started_at", "heartbeat_at", "lanes", "alive",
                     "this"],
        "properties": {
            "id": {"type": "string"}, "host": {"type": "string"},
            "pid": {"type": "integer"}, "started_at": {"type": "string"},
            "heartbeat_at": {"type": "string"},
            "lanes": {"type": "array", "items": {"type": "string"}},
            "alive": {"type": "boolean", "description": "its heartbeat is fresh"},
            "this": {"type": "boolean", "description": "the daemon that answered"},
        },
    },
    "StatusCounts": {
        "type": "object", "required": list(JOB_STATUSES),
        "properties": {s: {"type": "integer", "minimum": 0} for s in JOB_STATUSES},
    },
    "Health": {
        "type": "object", "required": ["ok", "database", "scheduler"],
        "properties": {"ok": {"type": "boolean"}, "database": {"type": "boolean"},
                       "scheduler": {"type": "boolean"}},
    },
    "PageForm": {
        "type": "object",
        "properties": {"csrf": {"type": "string",
                                "description": "the form's CSRF token from the page"}},
    },
}

_TRIGGER: Schema = {
    "post": {
        "summary": "One scheduler run now",
        "operationId": "trigger",
        "security": _CRON,
        "responses": {"200": ok_json("the run's summary", ref("RunSummary")),
                      "401": _UNAUTHORIZED, "413": _TOO_LARGE},
    },
}


def _page_action(summary: str, operation_id: str, extra: dict[str, Schema] | None = None
                 ) -> Schema:
    props = {"csrf": {"type": "string"}, **(extra or {})}
    return {"post": {
        "summary": summary,
        "operationId": operation_id,
        "tags": ["page"],
        "description": "A form post from the status page: needs the session cookie and its "
                       "CSRF token; answers 303 to `/` (or 403 with a page saying why).",
        "requestBody": {"required": False, "content": {
            FORM: {"schema": {"type": "object", "properties": props}}}},
        "responses": {"303": {"description": "back to the page with a one-time message"},
                      "403": _html("CSRF token missing or wrong, or not signed in"),
                      "413": _TOO_LARGE},
    }}


def _paths() -> dict[str, Schema]:
    enqueue_body: Schema = {"oneOf": [ref("Job"), ref("Jobs"), ref("Items"),
                                      ref("Refresh")]}
    return {
        "/enqueue": {"post": {
            "summary": "Enqueue one job or many",
            "operationId": "enqueue",
            "description": "One job, `{\"jobs\": [...]}`, or the seed's `items` and `refresh` "
                           "helpers. A duplicate of an active job returns that job and raises "
                           "its priority.",
            "security": [{"bearerAuth": []}, {}],
            "requestBody": {"required": True, "content": {JSON: {"schema": enqueue_body}}},
            "responses": {
                "202": ok_json("the jobs, in the order given", {
                    "type": "object", "required": ["jobs"],
                    "properties": {"jobs": {"type": "array",
                                            "items": ref("EnqueueResult")}}}),
                "400": _BAD, "401": _UNAUTHORIZED, "413": _TOO_LARGE, "503": _UNAVAILABLE,
            },
        }},
        "/trigger": _TRIGGER,
        "/api/market/scheduler/run": {"post": {**_TRIGGER["post"],
                                               "operationId": "trigger_seed_path",
                                               "summary": "The seed's path for /trigger"}},
        "/reset-failed": {"post": {
            "summary": "Move failed jobs back to pending",
            "operationId": "reset_failed",
            "security": _CRON,
            "requestBody": {"required": False, "content": {JSON: {"schema": {
                "type": "object",
                "properties": {"provider": nullable(_PROVIDER)}}}}},
            "responses": {
                "200": ok_json("how many jobs moved", {
                    "type": "object", "required": ["reset", "provider"],
                    "properties": {"reset": {"type": "integer", "minimum": 0},
                                   "provider": nullable({"type": "string"})}}),
                "400": _BAD, "401": _UNAUTHORIZED, "413": _TOO_LARGE,
            },
        }},
        "/status": {"get": {
            "summary": "The status page's data",
            "operationId": "status",
            "responses": {"200": ok_json("budgets, job counts, recent runs and batches",
                                     ref("Status"))},
        }},
        "/jobs": {"get": {
            "summary": "Jobs, newest first",
            "operationId": "jobs",
            "description": "A page of `limit` jobs from `offset`; while more follow, "
                           "`next_offset` and `next` (this request for the next page) are "
                           "set, null on the last page: nothing is cut silently.",
            "parameters": [
                query_param("status", {"type": "string", "enum": list(JOB_STATUSES)},
                       "only jobs in this status"),
                query_param("provider", _PROVIDER, "only this provider's jobs"),
                query_param("limit", {"type": "integer", "minimum": 1, "maximum": 1000,
                                 "default": 100}, "at most this many"),
                query_param("offset", {"type": "integer", "minimum": 0, "maximum": 10_000_000,
                                  "default": 0}, "skip this many"),
                query_param("user_id", {"type": "string", "minLength": 1, "maxLength": 128},
                       "only the jobs enqueued with this user_id"),
            ],
            "responses": {
                "200": ok_json("the jobs", {"type": "object", "required": ["jobs", "next_offset"],
                                        "properties": {
                                            "jobs": {"type": "array",
                                                     "items": ref("StoredJob")},
                                            "next_offset": nullable({"type": "integer"}),
                                            "next": nullable({
                                                "type": "string",
                                                "description": "the next page's path and "
                                                               "query"})}}),
                "400": _BAD,
            },
        }},
        **price_paths(sku=_SKU, size=_SIZE, provider=_PROVIDER, size_system=_SIZE_SYSTEM,
                      bad=_BAD),  # marketd.openapi_prices
        "/healthz": {"get": {
            "summary": "Liveness: the database answers and the scheduler is alive",
            "operationId": "healthz",
            "responses": {"200": ok_json("healthy", ref("Health")),
                          "503": ok_json("the database or the scheduler is down", ref("Health"))},
        }},
        "/metrics": {"get": {
            "summary": "Prometheus metrics",
            "operationId": "metrics",
            "responses": {"200": {"description": "Prometheus text format",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}}},
        }},
        "/openapi.json": {"get": {
            "summary": "This description",
            "operationId": "openapi",
            "responses": {"200": ok_json("OpenAPI 3 document", {"type": "object"})},
        }},
        "/": {"get": {
            "summary": "The HTML status page",
            "operationId": "page",
            "tags": ["page"],
            "parameters": [
                query_param("status", {"type": "string"}, "which jobs to list (active, all, or a "
                                                     "status)"),
                query_param("provider", {"type": "string"}, "only this provider's jobs"),
                query_param("page", {"type": "string"}, "page number, from 1"),
            ],
            "responses": {"200": _html("the page")},
        }},
        "/signin": {"post": {
            "summary": "Sign in to the page's actions with the cron secret",
            "operationId": "signin",
            "tags": ["page"],
            "requestBody": {"required": False, "content": {FORM: {"schema": {
                "type": "object",
                "properties": {"csrf": {"type": "string"}, "secret": {"type": "string"}}}}}},
            "responses": {"303": {"description": "signed in (a new session cookie)"},
                          "403": _html("CSRF token or secret refused"),
                          "413": _TOO_LARGE},
        }},
        "/signout": _page_action("Sign out", "signout"),
        "/actions/trigger": _page_action("One scheduler run now (page)", "page_trigger"),
        "/actions/reset-failed": _page_action(
            "Failed jobs back to pending (page)", "page_reset_failed",
            {"provider": {"type": "string", "description": "a provider, or all"}}),
        "/actions/refresh": _page_action(
            "Re-enqueue ticked prices at manual priority (page)", "page_refresh",
            {"price": {"type": "array", "maxItems": 500,
                       "items": {"type": "string", "description": "provider|sku|size"}}}),
    }


_FORM_OPS = ("/signin", "/signout", "/actions/")


def _with_guard_answers(spec: dict[str, Any]) -> dict[str, Any]:
    """The answers marketd.guard and the body readers give on every route: 421 for an unknown
    Host; 403 for a foreign Origin on a state change; on the JSON POSTs 415 for a body that is
    not JSON, 429 while a client that sent wrong secrets waits, 408 for a body too slow; 503
    on /enqueue when the queue is full (with Retry-After)."""
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            answers = op.setdefault("responses", {})
            answers.setdefault("421", _error("the Host header is not one of "
                                             "server.allowed_hosts"))
            if method in ("post", "put", "patch", "delete"):
                answers.setdefault("403", _error("a cross-origin request (Origin or "
                                                 "Sec-Fetch-Site) may not change anything"))
                if not path.startswith(_FORM_OPS):
                    answers.setdefault("415", _error("the body is not application/json"))
                    answers.setdefault("408", _error("the body did not arrive in time"))
                    answers.setdefault("429", _error("too many wrong secrets from this "
                                                     "client: wait Retry-After seconds"))
                else:
                    answers.setdefault("400", {"description": "the form's bytes or charset "
                                                              "could not be read"})
                    answers.setdefault("429", {"description": "too many wrong secrets"})
            if path == "/enqueue":
                answers["503"] = _error("the database is unavailable, or the queue is full "
                                        "(scheduler.max_pending_jobs; see Retry-After)")
    health = spec["components"]["schemas"]["Health"]["properties"]
    health["writable"] = {"type": "boolean"}
    health["reason"] = {"type": "string"}
    return spec


def openapi_spec() -> dict[str, Any]:
    """The OpenAPI 3.0 document of every route :func:`marketd.web.create_app` serves.

    A fresh deep copy each call, so a caller may change it freely.
    """
    return _with_guard_answers(copy.deepcopy({
        "openapi": "3.0.3",
        "info": {
            "title": "marketd",
            "version": __version__,
            "description": "Rate-limit-aware market-data fetcher for StockX, Alias and eBay. "
                           "Bad input gets 400 `{error, field}` and changes nothing; a body "
                           "over 1 MiB gets 413; wrong or missing secrets get 401. No input "
                           "ever gets a 500.",
        },
        "paths": _paths(),
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer",
                               "description": "security.api_token, when it is set"},
                "cronSecret": {"type": "apiKey", "in": "header", "name": "x-cron-secret",
                               "description": "security.cron_secret, when it is set"},
            },
        },
    }))


__all__ = ["openapi_spec"]
