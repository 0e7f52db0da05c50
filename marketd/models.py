"""Domain objects and input rules, without I/O.

A job is ``provider|sku|size``: the SKU upper-cased, the size normalised (``10.5``, ``42 2/3``,
``8.5W``) and, for a size that is not UK, prefixed by its system (``EU 40``) so that UK 6 and
EU 40 are different keys.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from marketd.clock import iso
from marketd.errors import ValidationError

PROVIDERS: tuple[str, ...] = ("stockx", "alias", "ebay")
SIZE_SYSTEMS: tuple[str, ...] = ("UK", "US", "EU")


class JobStatus(enum.StrEnum):
    """Where a job is in its life: pending -> running -> completed or failed (failed jobs go
    back to pending with reset-failed; running ones with the stuck-job rescue)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


JOB_STATUSES: tuple[str, ...] = tuple(s.value for s in JobStatus)
MAX_BATCH_JOBS = 1000
MIN_PRIORITY, MAX_PRIORITY = 0, 1000


class Priority(enum.IntEnum):
    BACKGROUND = 100
    HOT = 150
    MANUAL = 200


_SKU_RE = re.compile(r"^[A-Za-z0-9 ._/-]{1,64}$", re.ASCII)
# a whole or half number, or a whole number and a third (adidas EU 42 2/3), plus W/Y/C
_SIZE_RE = re.compile(r"^(\d{1,2})(?:(\.5|\.0)|\s?([12])/3)?\s?([WYC])?$",
                      re.IGNORECASE | re.ASCII)


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A validated request to fetch one price."""

    provider: str
    sku: str
    size: str | None
    size_system: str = "UK"
    priority: int = int(Priority.BACKGROUND)
    user_id: str | None = None

    @property
    def size_key(self) -> str | None:
        # size_key(self.size, self.size_system), inlined: Store.enqueue reads it for every job
        size = self.size
        if size is None:
            return None
        system = self.size_system
        return size if system == "UK" else f"{system} {size}"

    @property
    def dedupe_key(self) -> str:
        # dedupe_key(self.provider, self.sku, self.size_key), inlined like size_key
        size = self.size
        if size is not None and self.size_system != "UK":
            size = f"{self.size_system} {size}"
        return f"{self.provider}|{self.sku}|{size or ''}"


@dataclass(frozen=True, slots=True)
class Job:
    """A row of market_jobs; times are epoch seconds, like every time in the models."""

    id: str
    user_id: str | None
    provider: str
    sku: str
    size: str | None
    size_system: str
    priority: int
    status: JobStatus
    error_message: str | None
    retry_count: int
    started_at: float | None
    completed_at: float | None
    dedupe_key: str
    created_at: float
    next_attempt_at: float | None

    @property
    def size_key(self) -> str | None:
        return size_key(self.size, self.size_system)

    def as_dict(self) -> dict[str, Any]:
        """The job as the API shows it: times as ISO-8601 UTC text."""
        return {
            "id": self.id, "user_id": self.user_id, "provider": self.provider, "sku": self.sku,
            "size": self.size, "size_system": self.size_system, "priority": self.priority,
            "status": self.status.value, "error_message": self.error_message,
            "retry_count": self.retry_count, "started_at": iso(self.started_at),
            "completed_at": iso(self.completed_at), "dedupe_key": self.dedupe_key,
            "created_at": iso(self.created_at), "next_attempt_at": iso(self.next_attempt_at),
        }


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    id: str | None
    dedupe_key: str
    status: str
    priority: int
    deduplicated: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "dedupe_key": self.dedupe_key,
            "status": self.status,
            "priority": self.priority,
            "deduplicated": self.deduplicated,
        }


@dataclass(frozen=True, slots=True)
class Price:
    """One market observation; amounts are integers in minor units (pence, cents) or None."""

    provider: str
    sku: str
    size: str | None  # the size key, as in dedupe_key
    currency: str
    lowest_ask: int | None
    highest_bid: int | None
    last_sale: int | None
    fetched_at: float
    # the provider's other amounts, minor units (StockX: flex_lowest_ask, earn_more,
    # sell_faster), kept beside the lowest ask
    extra: tuple[tuple[str, int], ...] = ()


def size_key(size: str | None, system: str) -> str | None:
    if size is None:
        return None
    return size if system == "UK" else f"{system} {size}"


def dedupe_key(provider: str, sku: str, size: str | None) -> str:
    return f"{provider}|{sku}|{size or ''}"


def format_minor(amount: int | None) -> str | None:
    """Minor units to a decimal string in major units: 9600 -> ``"96.00"``."""
    if amount is None:
        return None
    sign = "-" if amount < 0 else ""
    whole, frac = divmod(abs(amount), 100)
    return f"{sign}{whole}.{frac:02d}"


# ---- validation ------------------------------------------------------------------------------
#
# Each rule is a ``_check_*`` function of (raw value, field); the public ``normalize_*`` and
# ``parse_job`` run it through a bounded memo of its outcome (a portfolio repeats its providers,
# SKUs, sizes and priorities). Only raw values whose equality means "same input" are memoised:
# exact ``str`` (up to _MEMO_MAX_LEN characters), exact ``int`` (not bool, within
# +-_MEMO_MAX_INT) and None. Everything else (floats: 0.0 == -0.0 but they normalise apart;
# bools: True == 1; subclasses; containers) goes to the rule itself, as before. A memoised
# failure keeps only its message and is raised anew with the caller's field.


def _check_provider(value: Any, field: str) -> str:
    if not isinstance(value, str) or value.strip().lower() not in PROVIDERS:
        raise ValidationError(f"provider must be one of {', '.join(PROVIDERS)}", field)
    return value.strip().lower()


def _check_sku(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise ValidationError("sku must be a string", field)
    sku = " ".join(value.split())
    if not sku:
        raise ValidationError("sku must not be empty", field)
    if len(sku) > 64:
        raise ValidationError("sku must be at most 64 characters", field)
    if not _SKU_RE.match(sku):
        raise ValidationError(
            "sku may hold only letters, digits, space, '-', '.', '/' and '_'", field
        )
    return sku.upper()


def _check_size(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValidationError("size must be a string, a number or null", field)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValidationError("size is not a size", field)
        text = f"{value:g}"
    else:
        text = str(value)
    text = text.strip()
    if len(text) > 16:
        raise ValidationError("size must be at most 16 characters", field)
    m = _SIZE_RE.match(text)
    if not m:
        raise ValidationError(
            "size is not a size: use a number in halves or thirds (10, 10.5, 42 2/3) "
            "with an optional W, Y or C suffix",
            field,
        )
    whole, half, third, suffix = m.groups()
    out = str(int(whole))
    if half == ".5":
        out += ".5"
    elif third:
        out += f" {third}/3"
    if suffix:
        out += suffix.upper()
    return out


def _check_size_system(value: Any, field: str) -> str:
    if value is None:
        return "UK"
    if not isinstance(value, str) or value.strip().upper() not in SIZE_SYSTEMS:
        raise ValidationError("size_system must be UK, US or EU", field)
    return value.strip().upper()


def _check_priority(value: Any, field: str) -> int:
    if value is None:
        return int(Priority.BACKGROUND)
    if isinstance(value, str):
        name = value.strip().upper()
        if name in Priority.__members__:
            return int(Priority[name])
        if re.fullmatch(r"[0-9]{1,4}", value.strip()):
            value = int(value.strip())
        else:
            raise ValidationError(
                "priority must be manual, hot, background or an integer 0-1000", field
            )
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(
            "priority must be manual, hot, background or an integer 0-1000", field
        )
    if not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise ValidationError("priority must be between 0 and 1000", field)
    return value


def _check_user_id(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 128:
        raise ValidationError("user_id must be a string of 1-128 characters or null", field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("user_id must be valid Unicode text", field) from None
    return value


_MEMO_SIZE = 4096  # distinct raw values remembered per rule
_MEMO_MAX_LEN = 128  # longer strings are checked every time (and never held)
_MEMO_MAX_INT = 2**31

Check = Callable[[Any, str], Any]


class _Rule:
    """A ``_check_*`` rule with a bounded memo (LRU) of its outcome on memoisable raw values.
    Called with (raw value, field, name): the normalised value, or ValidationError at
    ``field.name`` (``name`` with no field), a path built only when there is an error."""

    def __init__(self, check: Check) -> None:
        self.check = check
        self.outcome = functools.lru_cache(maxsize=_MEMO_SIZE)(self._outcome)

    def _outcome(self, value: Any) -> tuple[bool, Any]:
        try:
            return True, self.check(value, "")
        except ValidationError as exc:  # messages never depend on the field
            return False, exc.message

    def __call__(self, value: Any, field: str, name: str) -> Any:
        t = type(value)
        if ((t is str and len(value) <= _MEMO_MAX_LEN) or value is None
                or (t is int and -_MEMO_MAX_INT <= value <= _MEMO_MAX_INT)):
            ok, out = self.outcome(value)
            if ok:
                return out
            raise ValidationError(out, f"{field}.{name}" if field else name)
        return self.check(value, f"{field}.{name}" if field else name)


_PROVIDER = _Rule(_check_provider)
_SKU = _Rule(_check_sku)
_SIZE = _Rule(_check_size)
_SIZE_SYSTEM = _Rule(_check_size_system)
_PRIORITY = _Rule(_check_priority)
_USER_ID = _Rule(_check_user_id)


def normalize_provider(value: Any, field: str = "provider") -> str:
    out: str = _PROVIDER(value, "", field)
    return out


def normalize_sku(value: Any, field: str = "sku") -> str:
    out: str = _SKU(value, "", field)
    return out


def normalize_size(value: Any, field: str = "size") -> str | None:
    """``10``, ``10.5``, ``42 2/3``, ``8.5W``; numbers are accepted too. None means size-less."""
    out: str | None = _SIZE(value, "", field)
    return out


def normalize_size_system(value: Any, field: str = "size_system") -> str:
    out: str = _SIZE_SYSTEM(value, "", field)
    return out


def normalize_priority(value: Any, field: str = "priority") -> int:
    out: int = _PRIORITY(value, "", field)
    return out


def normalize_user_id(value: Any, field: str = "user_id") -> str | None:
    out: str | None = _USER_ID(value, "", field)
    return out


_JOB_KEYS = frozenset({"provider", "sku", "priority", "user_id", "size_system", "size"})


def parse_job(
    raw: Any,
    field: str = "",
    *,
    defaults: Mapping[str, Any] | None = None,
    size_keys: tuple[str, ...] = ("size",),
) -> JobSpec:
    """Validate one job object; ``defaults`` fill keys the object leaves out."""
    if not isinstance(raw, dict):
        raise ValidationError("a job must be a JSON object", field or None)
    merged: dict[str, Any]
    if defaults:
        merged = dict(defaults)
        merged.update(raw)
    else:
        merged = raw  # nothing to fill in: read the object itself, no copy
    plain_size = size_keys == ("size",)
    if plain_size:
        allowed = _JOB_KEYS
    else:
        allowed = frozenset({"provider", "sku", "priority", "user_id", "size_system", *size_keys})
    if not raw.keys() <= allowed:
        prefix = f"{field}." if field else ""
        for key in raw:
            if key not in allowed:
                raise ValidationError(f"unknown key {key!r}", f"{prefix}{key}")
    if "sku" not in merged:
        raise ValidationError("sku is required", f"{field}.sku" if field else "sku")
    if "provider" not in merged:
        raise ValidationError("provider is required", f"{field}.provider" if field else "provider")
    size_field = "size" if plain_size else next((k for k in size_keys if k in merged),
                                                 size_keys[0])
    get = merged.get
    # positional, in the order the rules ran before (the first bad value is the one reported)
    return JobSpec(
        _PROVIDER(merged["provider"], field, "provider"),
        _SKU(merged["sku"], field, "sku"),
        _SIZE(get(size_field), field, size_field),
        _SIZE_SYSTEM(get("size_system"), field, "size_system"),
        _PRIORITY(get("priority"), field, "priority"),
        _USER_ID(get("user_id"), field, "user_id"),
    )


def parse_enqueue_body(body: Any) -> list[JobSpec]:
    """Any of the four shapes of ``POST /enqueue`` to a list of jobs, all valid or none."""
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object", None)
    shapes = [k for k in ("jobs", "items", "refresh") if k in body]
    if len(shapes) > 1:
        raise ValidationError("give only one of jobs, items or refresh", shapes[1])
    if not shapes:
        return [parse_job(body)]
    shape = shapes[0]
    entries = body[shape]
    if not isinstance(entries, list):
        raise ValidationError(f"{shape} must be a list", shape)
    if not entries:
        raise ValidationError(f"{shape} must not be empty", shape)
    if len(entries) > MAX_BATCH_JOBS:
        raise ValidationError(f"at most {MAX_BATCH_JOBS} jobs per request", shape)
    if shape == "jobs":
        extra = set(body) - {"jobs"}
        if extra:
            raise ValidationError(f"unknown key {sorted(extra)[0]!r}", sorted(extra)[0])
        return [parse_job(e, f"jobs[{i}]") for i, e in enumerate(entries)]
    outer_allowed = {shape, "provider", "priority", "user_id", "size_system"}
    extra = set(body) - outer_allowed
    if extra:
        raise ValidationError(f"unknown key {sorted(extra)[0]!r}", sorted(extra)[0])
    defaults = {k: body[k] for k in ("provider", "priority", "user_id", "size_system") if k in body}
    if shape == "refresh":
        if "priority" in body:
            raise ValidationError("refresh jobs always have manual priority", "priority")
        defaults["priority"] = int(Priority.MANUAL)
        keys: tuple[str, ...] = ("size", "size_uk")
    else:
        defaults.setdefault("priority", int(Priority.BACKGROUND))
        keys = ("size_uk", "size")
    # entries are the app's inventory items: keep the keys a job knows, ignore the rest
    known = {"sku", "size", "size_uk", "size_system", "user_id", "provider"}
    if shape == "items":
        known.add("priority")
    jobs = []
    for i, e in enumerate(entries):
        if isinstance(e, dict):
            e = {k: v for k, v in e.items() if k in known}
        jobs.append(parse_job(e, f"{shape}[{i}]", defaults=defaults, size_keys=keys))
    return jobs
