"""The contract between the extension and the services it drives: one module both sides import.

The server side (the reference system's gateway and cells, the embedded ``EmergenceAdmin``)
validates requests with these schemas and publishes them (``GET /admin/openapi.json``); the
client side (the actions and probes, ``chaosemergence.activity``) checks its arguments with
the same schemas and limits before it sends anything, so an activity can neither accept what
a server refuses nor refuse what it accepts (tests/test_contract.py). Standard library only:
the base install (no Starlette, no uvicorn) imports it.

Each request schema is plain JSON Schema (the OpenAPI 3.0 subset: ``type``, ``enum``,
``minimum``/``maximum`` with ``exclusiveMinimum``/``exclusiveMaximum``, ``minLength``/
``maxLength``, ``items``/``minItems``, ``nullable``, ``required``), checked by ``check``,
a small validator for exactly that subset: every refusal is an ``InvalidField`` naming the
field, which the handlers answer with 400 ``{"error": ..., "field": ...}`` and the
activities raise as ``ActivityFailed``. A few rules JSON Schema cannot say simply (a latency
fault needs ``latency_ms > 0``) are checked after the schema and stated in the operation's
description.

Schemas that depend on the system (the cells' indexes, the dependencies' names) are built
from its settings (``AdminContract``), so the document describes the system that serves it;
the client, which does not know the system, checks against the widest one (``MAX_CELLS``).

The files through which a local system tells the extension where its admin API listens and
with which token (``token_file_for_port``, ``admin_url_file_for_port``) are part of it too.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "FAULT_KINDS",
    "MAX_BODY_BYTES",
    "MAX_CELLS",
    "MAX_CORRELATION_WINDOW_SECONDS",
    "MAX_FAULT_DURATION_SECONDS",
    "MAX_LATENCY_MS",
    "MAX_LEASE_SECONDS",
    "MAX_METRIC_WINDOW_SECONDS",
    "MAX_PRESSURE_DURATION_SECONDS",
    "MAX_RATE_MB",
    "MIN_LEASE_SECONDS",
    "SINCE",
    "TOKEN_ENV",
    "AdminContract",
    "InvalidField",
    "admin_url_file_for_port",
    "cell_index_schema",
    "cells_schema",
    "check",
    "check_fault",
    "check_lease_seconds",
    "check_pressure",
    "check_query_number",
    "correlation_window_schema",
    "default_state_dir",
    "defenses_schema",
    "fault_schema",
    "finite_json",
    "lease_seconds_schema",
    "metric_window_schema",
    "names_schema",
    "number_schema",
    "pressure_schema",
    "renewal_schema",
    "switch_schema",
    "token_file_for_port",
]

Schema = dict[str, Any]

# --------------------------------------------------------------------------- the limits
FAULT_KINDS: tuple[str, ...] = ("timeout", "latency", "error")
# A fault expires by itself at the latest this long after it was injected.
MAX_FAULT_DURATION_SECONDS = 24 * 3600.0
# Added latency beyond a minute is a timeout, not a latency fault.
MAX_LATENCY_MS = 60_000.0
MIN_LEASE_SECONDS = 1.0
MAX_LEASE_SECONDS = 3600.0
MAX_RATE_MB = 1024.0
MAX_PRESSURE_DURATION_SECONDS = 3600.0
# The longest window of counter increases a service keeps (/admin/increase) and the probes
# ask for, and the longest correlation window (/admin/correlation).
MAX_METRIC_WINDOW_SECONDS = 900.0
MAX_CORRELATION_WINDOW_SECONDS = 900.0
# A system has 1..MAX_CELLS cells, indexed from 0.
MAX_CELLS = 64
# Bodies larger than this are refused with 413 before any handler reads them.
MAX_BODY_BYTES = 64 * 1024

# --------------------------------------------------------------------------- the data plane
# How long the caller still waits for this request, in milliseconds (relative, as gRPC's
# grpc-timeout, so clocks need not agree). The gateway sends its per-attempt timeout; a cell
# with load shedding on drops a request still waiting for a worker once its caller has given
# up, instead of doing work nobody will read.
CALLER_TIMEOUT_HEADER = "X-Emergence-Timeout-Ms"
MAX_CALLER_TIMEOUT_MS = 24 * 3600 * 1000.0


def parse_caller_timeout(value: str | None) -> float | None:
    """The caller's timeout in seconds from CALLER_TIMEOUT_HEADER, None when absent."""
    if value is None:
        return None
    try:
        ms = float(value)
    except ValueError:
        ms = math.nan
    if not 0 < ms <= MAX_CALLER_TIMEOUT_MS:  # also refuses nan
        raise ValueError(
            f"{CALLER_TIMEOUT_HEADER} must be milliseconds in (0, {MAX_CALLER_TIMEOUT_MS:.0f}], "
            f"got {value!r}"
        )
    return ms / 1000


# --------------------------------------------------------------------------- token and files
# The admin token, when given rather than generated (the system then writes none).
TOKEN_ENV = "CHAOSEMERGENCE_ADMIN_TOKEN"


def default_state_dir() -> Path:
    """Where tokens, databases and logs live: $CHAOSEMERGENCE_HOME or ~/.chaosemergence."""
    return Path(os.environ.get("CHAOSEMERGENCE_HOME", Path.home() / ".chaosemergence"))


def token_file_for_port(port: int, state_dir: Path | None = None) -> Path:
    """The 0600 file holding the admin token of the gateway listening on `port`."""
    return (state_dir or default_state_dir()) / f"admin-token-{port}"


def admin_url_file_for_port(port: int, state_dir: Path | None = None) -> Path:
    """The file holding the URL of the admin listener of the gateway on `port`."""
    return (state_dir or default_state_dir()) / f"admin-url-{port}"


# --------------------------------------------------------------------------- the validator
class InvalidField(ValueError):
    """A request field that breaks its schema; ``field`` is its dotted path."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field} {message}")
        self.field = field


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and (isinstance(value, int) or math.isfinite(value))
    )


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return _is_number(value)
    raise AssertionError(f"schema type {kind!r} is not supported")


def _range(schema: Schema) -> str:
    low, high = schema.get("minimum"), schema.get("maximum")
    left = "(" if schema.get("exclusiveMinimum") else "["
    right = ")" if schema.get("exclusiveMaximum") else "]"
    if low is not None and high is not None:
        return f" in {left}{low:g}, {high:g}{right}"
    if low is not None:
        return f" {'>' if left == '(' else '>='} {low:g}"
    if high is not None:
        return f" {'<' if right == ')' else '<='} {high:g}"
    return ""


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def check(schema: Schema, value: Any, field: str = "body") -> Any:
    """``value`` if it satisfies ``schema``, else ``InvalidField`` naming the field."""
    if value is None:
        if schema.get("nullable"):
            return None
        if field == "body":
            raise InvalidField(field, "must be a JSON object")
    kind = schema.get("type")
    if "enum" in schema and value not in schema["enum"]:
        known = ", ".join(repr(v) for v in schema["enum"])
        raise InvalidField(field, f"must be one of {known}, got {_describe(value)}")
    if kind is not None and not _type_ok(kind, value):
        null = " or null" if schema.get("nullable") else ""
        raise InvalidField(
            field, f"must be {_a(kind)}{_range(schema)}{null}, got {_describe(value)}"
        )
    if kind in ("number", "integer"):
        low, high = schema.get("minimum"), schema.get("maximum")
        if (
            low is not None and (value < low or (schema.get("exclusiveMinimum") and value == low))
        ) or (
            high is not None
            and (value > high or (schema.get("exclusiveMaximum") and value == high))
        ):
            raise InvalidField(field, f"must be {_a(kind)}{_range(schema)}, got {_describe(value)}")
    if kind == "string":
        low, high = schema.get("minLength", 0), schema.get("maxLength")
        if len(value) < low or (high is not None and len(value) > high):
            bound = f"{low}-{high}" if high is not None else f"at least {low}"
            raise InvalidField(field, f"must be a string of {bound} characters")
    if kind == "array":
        if len(value) < schema.get("minItems", 0):
            raise InvalidField(field, f"must have at least {schema['minItems']} item(s)")
        items = schema.get("items")
        if items is not None:
            for position, item in enumerate(value):
                check(items, item, f"{field}[{position}]")
        if schema.get("uniqueItems") and len({repr(v) for v in value}) != len(value):
            raise InvalidField(field, "must not repeat an item")
    if kind == "object":
        for name in schema.get("required", ()):
            if name not in value:
                raise InvalidField(name, "is required")
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                check(sub, value[name], name if field == "body" else f"{field}.{name}")
    return value


def number_schema(
    low: float | None,
    high: float | None,
    *,
    exclusive_low: bool = False,
    description: str = "",
    kind: str = "number",
    **extra: Any,
) -> Schema:
    schema: Schema = {"type": kind, **extra}
    if low is not None:
        schema["minimum"] = low
        if exclusive_low:
            schema["exclusiveMinimum"] = True
    if high is not None:
        schema["maximum"] = high
    if description:
        schema["description"] = description
    return schema


def lease_seconds_schema() -> Schema:
    return number_schema(
        MIN_LEASE_SECONDS,
        MAX_LEASE_SECONDS,
        description="the lease on what this weakens (seconds; default: the system's lease_seconds)",
    )


def fault_schema(dependencies: Iterable[str]) -> Schema:
    """A fault in a simulated dependency ("all": every dependency of the cell)."""
    return {
        "type": "object",
        "required": ["kind", "duration"],
        "properties": {
            "kind": {"type": "string", "enum": list(FAULT_KINDS)},
            "percentage": number_schema(
                0, 100, exclusive_low=True, default=100, description="share of calls hit"
            ),
            "duration": number_schema(
                0,
                MAX_FAULT_DURATION_SECONDS,
                exclusive_low=True,
                description="seconds until the fault expires by itself",
            ),
            "dependency": {
                "type": "string",
                "enum": ["all", *sorted(dependencies)],
                "default": "all",
            },
            "latency_ms": number_schema(
                0,
                MAX_LATENCY_MS,
                default=0,
                description="added latency; must be > 0 for kind latency",
            ),
        },
    }


def cell_index_schema(cells: int = MAX_CELLS) -> Schema:
    """A cell's index in a system of ``cells`` cells (the client: the largest system)."""
    return number_schema(0, cells - 1, kind="integer", description="a cell's index")


def cells_schema(cells: int = MAX_CELLS) -> Schema:
    return {
        "type": "array",
        "items": cell_index_schema(cells),
        "minItems": 1,
        "nullable": True,
        "description": "the cells to target (null or absent: every cell); one bad index "
        "refuses the whole request",
    }


def names_schema(names: Sequence[str] | None = None) -> Schema:
    """Defense names (any when ``names`` is None: the client does not know the service's)."""
    items: Schema = {"type": "string", "minLength": 1, "maxLength": 64}
    if names is not None:
        items = {"type": "string", "enum": list(names)}
    return {
        "type": "array",
        "nullable": True,
        "items": items,
        "description": "the defenses to switch (null or absent: all)",
    }


def metric_window_schema() -> Schema:
    """The window of counter increases (``/admin/increase?seconds=``, the probes' ``window``)."""
    return number_schema(
        0, MAX_METRIC_WINDOW_SECONDS, exclusive_low=True, description="the window, in seconds"
    )


def correlation_window_schema(high: float = MAX_CORRELATION_WINDOW_SECONDS) -> Schema:
    return number_schema(
        0, high, exclusive_low=True, description="the correlation window, in seconds"
    )


def pressure_schema() -> Schema:
    return {
        "type": "object",
        "required": ["megabytes_per_second", "duration"],
        "properties": {
            "megabytes_per_second": number_schema(0, MAX_RATE_MB, exclusive_low=True),
            "duration": number_schema(
                0, MAX_PRESSURE_DURATION_SECONDS, exclusive_low=True, description="seconds"
            ),
        },
    }


def switch_schema() -> Schema:
    """``/admin/jitter``: on or off, with the lease on what it weakens."""
    return {
        "type": "object",
        "required": ["enabled"],
        "properties": {"enabled": {"type": "boolean"}, "lease_seconds": lease_seconds_schema()},
    }


def renewal_schema() -> Schema:
    """``POST /admin/lease``."""
    return {"type": "object", "properties": {"seconds": lease_seconds_schema()}}


def defenses_schema(names: Sequence[str] | None) -> Schema:
    """``/admin/defenses``: on or off, which ones (of ``names``), the lease."""
    return {
        "type": "object",
        "required": ["enabled"],
        "properties": {
            "enabled": {"type": "boolean"},
            "names": names_schema(names),
            "lease_seconds": lease_seconds_schema(),
        },
    }


# ``/admin/events?since=``.
SINCE: Schema = number_schema(0, None, description="only events after this Unix time")


def check_query_number(raw: str | None, name: str, schema: Schema, default: float) -> float:
    """A query parameter (text) as a number satisfying ``schema``; absent: ``default``."""
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidField(name, f"must be a number, got {_describe(raw)}") from None
    if not math.isfinite(value):
        raise InvalidField(name, f"must be a finite number, got {_describe(raw)}")
    return float(check(schema, value, name))


def check_fault(body: Any, dependencies: Iterable[str]) -> dict[str, Any]:
    """A fault request, normalized (defaults filled in, numbers as floats)."""
    check(fault_schema(dependencies), body)
    kind = body["kind"]
    latency_ms = float(body.get("latency_ms", 0))
    if kind == "latency" and latency_ms <= 0:
        raise InvalidField("latency_ms", "must be > 0 for a latency fault")
    return {
        "kind": kind,
        "percentage": float(body.get("percentage", 100)),
        "duration": float(body["duration"]),
        "dependency": body.get("dependency", "all"),
        "latency_ms": latency_ms,
    }


def check_pressure(body: Any) -> tuple[float, float]:
    check(pressure_schema(), body)
    return float(body["megabytes_per_second"]), float(body["duration"])


def check_lease_seconds(value: Any, default: float, field: str = "lease_seconds") -> float:
    if value is None:
        return default
    return float(check(lease_seconds_schema(), value, field))


# --------------------------------------------------------------------------- the document
_ERROR: Schema = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}, "field": {"type": "string"}},
}
_OBJECT: Schema = {"type": "object"}
_REASONS = {
    "200": "OK",
    "201": "Created",
    "400": "a field breaks its schema (the answer names it)",
    "401": "missing or wrong admin token",
    "409": "the cell is down",
    "413": f"body larger than {MAX_BODY_BYTES} bytes",
    "502": "the cell did not take it",
}


@dataclass(frozen=True)
class Parameter:
    name: str
    where: str  # "path" or "query"
    schema: Schema
    required: bool = False

    def as_openapi(self) -> Schema:
        return {
            "name": self.name,
            "in": self.where,
            "required": self.required or self.where == "path",
            "schema": self.schema,
        }


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    body: Schema | None = None
    parameters: tuple[Parameter, ...] = ()
    success: str = "200"
    extra: tuple[str, ...] = ()
    media: str = "application/json"

    def as_openapi(self) -> Schema:
        codes = [self.success, "401"]
        if self.body is not None or self.parameters:
            codes.append("400")
        if self.body is not None:
            codes.append("413")
        codes += self.extra
        responses: Schema = {}
        for code in sorted(codes):
            schema = _ERROR if code >= "400" else _OBJECT
            content = (
                {"text/html": {"schema": {"type": "string"}}}
                if self.media != "application/json" and code < "400"
                else {"application/json": {"schema": schema}}
            )
            responses[code] = {
                "description": _REASONS.get(code, "see the summary"),
                "content": content,
            }
        operation: Schema = {
            "operationId": f"{self.method}_{self.path.strip('/').replace('/', '_')}".replace(
                "{", ""
            )
            .replace("}", "")
            .replace("-", "_"),
            "summary": self.summary,
            "responses": responses,
        }
        if self.parameters:
            operation["parameters"] = [p.as_openapi() for p in self.parameters]
        if self.body is not None:
            # Required when some field is (else an absent body means every default).
            operation["requestBody"] = {
                "required": bool(self.body.get("required")),
                "content": {"application/json": {"schema": self.body}},
            }
        return operation


class AdminContract:
    """The admin API of one system: its request schemas, its checks and its document."""

    def __init__(
        self, cells: int, dependencies: Iterable[str], shared: str, max_window: float
    ) -> None:
        if not 1 <= cells <= MAX_CELLS:
            raise ValueError(f"cells must be between 1 and {MAX_CELLS}, got {cells}")
        self.cells = cells
        self.window = correlation_window_schema(max_window)
        self.dependencies = [*dependencies, shared]
        self.cell_index: Schema = cell_index_schema(cells)
        self.cells_field: Schema = cells_schema(cells)
        self.fault = fault_schema(self.dependencies)
        self.fault["properties"]["cells"] = self.cells_field
        self.switch = switch_schema()
        self.pressure = pressure_schema()
        self.renewal = renewal_schema()
        self.resume = {
            "type": "object",
            "properties": {
                "reason": {"type": "string", "minLength": 1, "maxLength": 200},
                "cells": self.cells_field,
            },
        }

    @staticmethod
    def defenses_schema(names: Sequence[str]) -> Schema:
        return defenses_schema(names)

    def check_fault(self, body: Any) -> tuple[dict[str, Any], list[int]]:
        normalized = check_fault(body, self.dependencies)
        return normalized, self.check_cells(body.get("cells"))

    def check_cells(self, value: Any) -> list[int]:
        if value is None:
            return list(range(self.cells))
        return sorted(set(check(self.cells_field, value, "cells")))

    def check_id(self, raw: str) -> str:
        return str(check(self.fault_id, raw, "id"))

    def check_index(self, raw: str) -> int:
        """A path's cell index (text) as an int in range; InvalidField names ``index``."""
        try:
            value = int(raw)
        except ValueError:
            raise InvalidField("index", f"must be an integer, got {_describe(raw)}") from None
        return int(check(self.cell_index, value, "index"))

    check_query_number = staticmethod(check_query_number)

    # Query parameters.
    since: Schema = SINCE
    seconds: Schema = metric_window_schema()
    fault_id: Schema = {"type": "string", "minLength": 1, "maxLength": 64}

    def operations(self, defense_names: Sequence[str]) -> list[Operation]:
        index = Parameter("index", "path", self.cell_index, True)
        return [
            Operation("get", "/admin/openapi.json", "this document"),
            Operation("get", "/admin/state", "the gateway's and every cell's state"),
            Operation(
                "get",
                "/admin/process",
                "each process's memory, descriptors, threads and asyncio tasks",
            ),
            Operation(
                "get",
                "/admin/events",
                "defense events from every cell and the gateway",
                parameters=(Parameter("since", "query", self.since),),
            ),
            Operation(
                "get",
                "/admin/increase",
                "counter increases over a window",
                parameters=(Parameter("seconds", "query", self.seconds),),
            ),
            Operation(
                "get",
                "/admin/correlation",
                "the cells' correlation on the shared dependency",
                parameters=(Parameter("window", "query", self.window),),
            ),
            Operation("get", "/admin/metastable", "each cell's metastable condition"),
            Operation(
                "post",
                "/admin/metastable/resume",
                "resume recovery held for an operator",
                body=self.resume,
            ),
            Operation("get", "/admin/lost-writes", "acknowledged payments a cell lost"),
            Operation("get", "/admin/dashboard", "the dashboard's data", extra=("503",)),
            Operation(
                "post",
                "/admin/faults",
                "inject a fault (expires by itself); a latency fault needs latency_ms > 0",
                body=self.fault,
                success="201",
            ),
            Operation(
                "delete",
                "/admin/faults",
                "clear one fault (id) or all",
                parameters=(Parameter("id", "query", self.fault_id),),
            ),
            Operation("post", "/admin/cache/invalidate", "invalidate every cell's cache"),
            Operation(
                "post",
                "/admin/jitter",
                "remove (false) or restore (true) the jitter; removing takes the lease",
                body=self.switch,
            ),
            Operation(
                "post",
                "/admin/defenses",
                "switch defenses; off takes the lease",
                body=self.defenses_schema(defense_names),
            ),
            Operation("get", "/admin/lease", "the lease on what is weakened"),
            Operation(
                "post",
                "/admin/lease",
                "renew the lease (a no-op when nothing is held)",
                body=self.renewal,
            ),
            Operation("post", "/admin/cells/{index}/kill", "SIGKILL a cell", parameters=(index,)),
            Operation(
                "post",
                "/admin/cells/{index}/memory-pressure",
                "make a cell leak memory",
                body=self.pressure,
                parameters=(index,),
                success="201",
                extra=("409", "502"),
            ),
            Operation("post", "/admin/cells/restart", "restart dead cells"),
            Operation(
                "post",
                "/admin/reset",
                "every fault cleared, every defense on, jitter back, dead cells restarted",
            ),
        ]

    def document(self, defense_names: Sequence[str]) -> Schema:
        """The OpenAPI 3.0 document of the admin API."""
        paths: Schema = {}
        for operation in self.operations(defense_names):
            paths.setdefault(operation.path, {})[operation.method] = operation.as_openapi()
        return {
            "openapi": "3.0.3",
            "info": {
                "title": "chaosemergence admin API",
                "version": "1",
                "description": "Every path needs the admin token (Authorization: Bearer). "
                "Generated from the schemas the handlers validate with "
                "(chaosemergence/contract.py).",
            },
            "components": {
                "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
            },
            "security": [{"token": []}],
            "paths": paths,
        }


def finite_json(value: Any) -> Any:
    """``value`` with non-finite floats (an event's infinite risk) as null: JSON has none.

    Every admin answer goes through it, the embedding's and the reference cells' alike."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    return value
