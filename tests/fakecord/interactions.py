"""Interaction records and the slash-command option builder.

An `Interaction` is what a test gets back from `FakeDiscord.slash/click/autocomplete`: the
payload that was dispatched, and everything the bot answered (callbacks, the original response
message, follow-ups).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .state import Channel, Message, StoredFile, User

APPLICATION_COMMAND, MESSAGE_COMPONENT, AUTOCOMPLETE = 2, 3, 4
# Application command types, and the component types a user can use.
CHAT_INPUT, USER_COMMAND, MESSAGE_COMMAND = 1, 2, 3
BUTTON, STRING_SELECT = 2, 3

# Callback types (Discord's InteractionResponseType).
PONG = 1
CHANNEL_MESSAGE = 4
DEFERRED_CHANNEL_MESSAGE = 5
DEFERRED_UPDATE_MESSAGE = 6
UPDATE_MESSAGE = 7
AUTOCOMPLETE_RESULT = 8
MODAL = 9

# Application command option types.
SUB_COMMAND, SUB_COMMAND_GROUP, STRING, INTEGER, BOOLEAN = 1, 2, 3, 4, 5
USER, CHANNEL, ROLE, MENTIONABLE, NUMBER, ATTACHMENT = 6, 7, 8, 9, 10, 11


@dataclass
class Callback:
    """One `POST /interactions/{id}/{token}/callback` the bot made."""

    type: int
    data: dict[str, Any]
    at: float

    @property
    def ephemeral(self) -> bool:
        return bool(int(self.data.get("flags", 0) or 0) & 64)


@dataclass
class Interaction:
    id: int
    token: str
    type: int
    user: User
    channel: Channel
    payload: dict[str, Any]
    message: Message | None = None  # the message a clicked component sits on
    created: float = field(default_factory=time.monotonic)
    callbacks: list[Callback] = field(default_factory=list)
    original: Message | None = None
    followups: list[Message] = field(default_factory=list)

    @property
    def responded(self) -> bool:
        return bool(self.callbacks)

    @property
    def response(self) -> Callback | None:
        return self.callbacks[0] if self.callbacks else None

    @property
    def ephemeral(self) -> bool:
        """Whether the bot's first answer was ephemeral (visible only to the user)."""
        if self.original is not None and self.original is not self.message:
            return self.original.ephemeral
        return self.response is not None and self.response.ephemeral

    @property
    def deferred(self) -> bool:
        return self.response is not None and self.response.type in (
            DEFERRED_CHANNEL_MESSAGE,
            DEFERRED_UPDATE_MESSAGE,
        )

    @property
    def choices(self) -> list[dict[str, Any]] | None:
        """The autocomplete choices the bot answered with, if it did."""
        for cb in self.callbacks:
            if cb.type == AUTOCOMPLETE_RESULT:
                return list(cb.data.get("choices", []))
        return None

    @property
    def messages(self) -> list[Message]:
        """Every message the bot showed for this interaction: the original, then follow-ups."""
        found = [self.original] if self.original is not None else []
        return found + [m for m in self.followups if m is not self.original]


def find_command(
    commands: list[dict[str, Any]], name: str, kind: int = CHAT_INPUT
) -> dict[str, Any] | None:
    """The synced command of type `kind` called `name` (for slash commands, its first word)."""
    top = name.split()[0] if kind == CHAT_INPUT else name
    for command in commands:
        if command["name"] == top and command.get("type", CHAT_INPUT) == kind:
            return command
    return None


def build_options(
    command: dict[str, Any],
    path: list[str],
    values: dict[str, Any],
    files: dict[str, StoredFile],
    *,
    focused: str | None,
    cdn_base: str,
    resolved: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """The `data.options` a Discord client would send, checked against the synced definition.

    Raises ValueError for what a real client would not let the user send: unknown or missing
    required options, a value outside the choices or the min/max range, a wrong type.
    """
    definitions = command.get("options", [])
    if path:
        sub = next((o for o in definitions if o["name"] == path[0]), None)
        if sub is None or sub["type"] not in (SUB_COMMAND, SUB_COMMAND_GROUP):
            raise ValueError(f"/{command['name']} has no subcommand {path[0]!r}")
        inner = build_options(
            sub, path[1:], values, files, focused=focused, cdn_base=cdn_base, resolved=resolved
        )
        return [{"name": sub["name"], "type": sub["type"], "options": inner}]
    by_name = {o["name"]: o for o in definitions}
    unknown = (set(values) | set(files)) - set(by_name)
    if unknown:
        raise ValueError(f"/{command['name']} has no option(s) {sorted(unknown)}")
    options: list[dict[str, Any]] = []
    for definition in definitions:
        name = definition["name"]
        kind = definition["type"]
        if name in files:
            if kind != ATTACHMENT:
                raise ValueError(f"option {name!r} is not an attachment option")
            stored = files[name]
            resolved.setdefault("attachments", {})[str(stored.id)] = stored.payload(cdn_base)
            options.append({"name": name, "type": kind, "value": str(stored.id)})
            continue
        if name not in values:
            if definition.get("required") and focused is None:
                raise ValueError(f"/{command['name']} needs option {name!r}")
            continue
        value = values[name]
        if name == focused:
            options.append({"name": name, "type": kind, "value": str(value), "focused": True})
            continue
        options.append({"name": name, "type": kind, "value": _check_value(definition, value)})
        if kind in (USER, MENTIONABLE) and isinstance(value, User):
            resolved.setdefault("users", {})[str(value.id)] = value.payload()
            options[-1]["value"] = str(value.id)
    return options


def _check_value(definition: dict[str, Any], value: Any) -> Any:
    name, kind = definition["name"], definition["type"]
    expected: dict[int, tuple[type, ...]] = {
        STRING: (str,),
        INTEGER: (int,),
        BOOLEAN: (bool,),
        NUMBER: (int, float),
    }
    if kind in expected and (
        not isinstance(value, expected[kind]) or (kind != BOOLEAN and isinstance(value, bool))
    ):
        raise ValueError(f"option {name!r} takes type {kind}, got {value!r}")
    choices = definition.get("choices")
    if choices and value not in [c["value"] for c in choices]:
        raise ValueError(f"option {name!r} must be one of {[c['value'] for c in choices]}")
    if kind in (INTEGER, NUMBER):
        low, high = definition.get("min_value"), definition.get("max_value")
        if (low is not None and value < low) or (high is not None and value > high):
            raise ValueError(f"option {name!r} must be within [{low}, {high}], got {value}")
    if kind == STRING:
        low, high = definition.get("min_length", 0), definition.get("max_length", 6000)
        if not low <= len(value) <= high:
            raise ValueError(f"option {name!r} must be {low}..{high} characters long")
    return value
