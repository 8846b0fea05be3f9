"""Checking recorded REST traffic against Discord's OpenAPI spec (tests/data/discord/openapi.json).

`Spec.violations(exchange)` validates one `Exchange` (what `FakeDiscord(record=True)` keeps in
`discord.exchanges`): the request's query and JSON body against the operation's parameters and
request schema, and the answer's status and body against the response the operation declares
for that status. JSON Schema Draft 2020-12; every `$ref` resolves against the whole document.

Tolerated, and only this (the looseness the README beside the spec names): snowflakes sent as
JSON numbers and query booleans sent as 1/0 (in requests). On top of the spec, message
`content` in a request must be at most 2000 characters (the bot limit), and a 5xx answer,
which the spec does not describe, must still be Discord's error object.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match, relevance
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from .server import Exchange

SPEC_PATH = Path(__file__).resolve().parent.parent / "data" / "discord" / "openapi.json"
_BASE = "urn:discord-openapi"
_METHODS = ("get", "put", "post", "patch", "delete")
_SNOWFLAKE = "#/components/schemas/SnowflakeType"
_RESOLVED = (  # data.resolved of an interaction: each kind and the schema of its objects
    ("users", "UserResponse"),
    ("members", "BasicGuildMemberResponse"),
    ("messages", "MessageResponse"),
    ("attachments", "MessageAttachmentResponse"),
)


class Spec:
    """Discord's OpenAPI document, ready to validate exchanges."""

    def __init__(self, path: Path = SPEC_PATH) -> None:
        self.doc: dict[str, Any] = json.loads(path.read_text())
        loose = copy.deepcopy(self.doc)
        strict_snowflake = loose["components"]["schemas"]["SnowflakeType"]
        loose["components"]["schemas"]["SnowflakeType"] = {
            "anyOf": [strict_snowflake, {"type": "integer", "minimum": 0}]
        }
        self._strict = _registry(self.doc)
        self._loose = _registry(loose)
        self._paths: list[tuple[re.Pattern[str], str]] = []
        for template in self.doc["paths"]:
            pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
            self._paths.append((re.compile(pattern + "$"), template))
        # A literal segment (/users/@me) wins over a parameter (/users/{user_id}).
        self._paths.sort(key=lambda p: p[1].count("{"))

    def operation(self, method: str, path: str) -> tuple[str, dict[str, Any]] | None:
        """The spec's path template and operation object for a concrete request."""
        for pattern, template in self._paths:
            if pattern.match(path):
                op = self.doc["paths"][template].get(method.lower())
                if op is not None:
                    return template, op
        return None

    def violations(self, ex: Exchange) -> list[str]:
        """Everything about `ex` that Discord's spec (with the tolerances) does not allow."""
        found = self.operation(ex.method, ex.path)
        if found is None:
            return [f"{ex}: no such operation in the spec"]
        template, op = found
        where = ["paths", template, ex.method.lower()]
        problems = self._query(ex, template, op)
        problems += self._request(ex, op, where)
        problems += self._response(ex, op, where)
        return [f"{ex}: {p}" for p in problems]

    def interaction_violations(self, payload: dict[str, Any]) -> list[str]:
        """What the spec says about a dispatched INTERACTION_CREATE (it has no schema for the
        event itself): the command and component types, `target_id` naming a resolved object,
        a select's `values`, and every resolved user, member, message and attachment, and the
        message a component sits on, each against its response schema."""
        data = payload.get("data") or {}
        checks: list[tuple[Any, str, str]] = []
        if "type" in data:
            checks.append((data["type"], "ApplicationCommandType", "data.type"))
        if "component_type" in data:
            checks.append((data["component_type"], "MessageComponentTypes", "data.component_type"))
        resolved = data.get("resolved") or {}
        for key, schema in _RESOLVED:
            for id_, value in (resolved.get(key) or {}).items():
                checks.append((value, schema, f"data.resolved.{key}.{id_}"))
        if "message" in payload:
            checks.append((payload["message"], "MessageResponse", "message"))
        problems = [
            problem
            for value, schema, where in checks
            for problem in self._validate(
                value, ["components", "schemas", schema], self._strict, where
            )
        ]
        target_kind = {2: "users", 3: "messages"}.get(data.get("type", 1))
        if target_kind and data.get("target_id") not in (resolved.get(target_kind) or {}):
            problems.append(f"data.target_id is not in data.resolved.{target_kind}")
        if data.get("component_type") == 3 and not (
            isinstance(data.get("values"), list) and all(isinstance(v, str) for v in data["values"])
        ):
            problems.append("data.values of a string select must be a list of strings")
        return problems

    # ---- the three parts of an exchange ------------------------------------------------

    def _query(self, ex: Exchange, template: str, op: dict[str, Any]) -> list[str]:
        params = op.get("parameters", []) + self.doc["paths"][template].get("parameters", [])
        declared = {p["name"]: p for p in params if p.get("in") == "query"}
        problems = []
        for name, value in ex.query.items():
            if name not in declared:
                problems.append(f"query parameter {name!r} is not in the spec")
                continue
            validator = self._validator(declared[name]["schema"], self._strict)
            if not any(validator.is_valid(c) for c in _query_candidates(value)):
                problems.append(f"query {name}={value!r} does not match {declared[name]['schema']}")
        return problems

    def _request(self, ex: Exchange, op: dict[str, Any], where: list[str]) -> list[str]:
        body = op.get("requestBody")
        if body is None:
            if ex.request not in (None, {}):
                return ["the operation takes no request body, one was sent"]
            return []
        if ex.request is None:
            return ["a request body is required"] if body.get("required") else []
        content = body["content"]
        kind = "application/json" if "application/json" in content else next(iter(content))
        problems = self._validate(
            ex.request, [*where, "requestBody", "content", kind, "schema"], self._loose, "request"
        )
        text = ex.request.get("content") if isinstance(ex.request, dict) else None
        if isinstance(text, str) and len(text) > 2000:
            problems.append(f"request: content is {len(text)} characters (bots: 2000 at most)")
        return problems

    def _response(self, ex: Exchange, op: dict[str, Any], where: list[str]) -> list[str]:
        responses = op.get("responses", {})
        status = str(ex.status)
        key = next((k for k in (status, status[0] + "XX", "default") if k in responses), None)
        body = ex.response
        if key is None:
            if ex.status >= 500:  # not in the spec; Discord still answers its error object
                return self._validate(
                    body, ["components", "schemas", "ErrorResponse"], self._strict, "5xx response"
                )
            return [f"status {ex.status} is not one the operation answers"]
        response = responses[key]
        path = [*where, "responses", key]
        if "$ref" in response:
            ref = response["$ref"].removeprefix("#/").split("/")
            path, response = ref, self._resolve(ref)
        if "content" not in response:
            return [] if body is None else [f"status {ex.status} has no body, one was sent"]
        schema_path = [*path, "content", "application/json", "schema"]
        return self._validate(body, schema_path, self._strict, "response")

    # ---- helpers -----------------------------------------------------------------------

    def _resolve(self, parts: list[str]) -> Any:
        node: Any = self.doc
        for part in parts:
            node = node[part]
        return node

    def _validator(self, schema: dict[str, Any], registry: Registry) -> Draft202012Validator:
        if "$ref" in schema and schema["$ref"].startswith("#"):
            schema = {"$ref": _BASE + schema["$ref"]}
        return Draft202012Validator(schema, registry=registry)

    def _validate(self, value: Any, parts: list[str], registry: Registry, side: str) -> list[str]:
        pointer = "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)
        schema = {"$ref": f"{_BASE}#/{quote(pointer, safe='/~')}"}
        errors = sorted(
            Draft202012Validator(schema, registry=registry).iter_errors(value), key=relevance
        )
        return [f"{side}: {_describe(e)}" for e in errors[:5]]


def _registry(doc: dict[str, Any]) -> Registry:
    resource = Resource.from_contents(doc, default_specification=DRAFT202012)
    return Registry().with_resource(_BASE, resource)


def _query_candidates(value: str) -> list[Any]:
    candidates: list[Any] = [value]
    if value.lower() in ("true", "false"):
        candidates.append(value.lower() == "true")
    if value in ("1", "0"):  # tolerated: query booleans as 1/0
        candidates.append(value == "1")
    if re.fullmatch(r"-?\d+", value):
        candidates.append(int(value))
    return candidates


def _describe(error: ValidationError) -> str:
    deepest = best_match([error]) if error.context else error
    where = deepest.json_path
    message = deepest.message
    if len(message) > 300:
        message = message[:300] + "..."
    return f"at {where}: {message}"
