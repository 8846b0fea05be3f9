"""Reading request bodies and message/command payloads the way Discord does, with its limits
and errors.

Checks are the ones a bot really trips over: empty messages, 2000-character content, embed
limits, component layout and custom_id rules, attachment references, upload size (413/40005)
and command-definition validity.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .state import EPHEMERAL, Channel, Guild, Message, StoredFile

if TYPE_CHECKING:
    from .emulator import FakeDiscord

# Flags a bot may set on a message: SUPPRESS_EMBEDS, EPHEMERAL, SUPPRESS_NOTIFICATIONS,
# IS_COMPONENTS_V2.
MESSAGE_FILES_LIMIT = 25 * 1024 * 1024  # all files of one message together
SETTABLE_FLAGS = (1 << 2) | (1 << 6) | (1 << 12) | (1 << 15)
_COMMAND_NAME = re.compile(r"^[-_\w]{1,32}$")
STRING_SELECT = 3  # component type
USER_COMMAND, MESSAGE_COMMAND = 2, 3  # application command types besides CHAT_INPUT (1)
_FILE_FIELD = re.compile(r"files\[(\d+)\]|file(\d*)")
# (JSON payload, number of files) as read_body parsed them, for the recorder
BODY: web.RequestKey[tuple[Any, int]] = web.RequestKey("fakecord.body", tuple)


class ApiError(Exception):
    """An error answer in Discord's JSON shape."""

    def __init__(
        self, status: int, code: int, message: str, errors: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{status} {code} {message} {errors or ''}")
        self.status, self.code, self.message, self.errors = status, code, message, errors

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors:
            body["errors"] = self.errors
        return body


def invalid_form(field: str, reason: str) -> ApiError:
    """Discord's 400 50035 Invalid Form Body, naming the field and why."""
    # The spec's Error wants an integer `code` in each of a field's `_errors` too.
    error = {"code": 50035, "message": reason}
    return ApiError(400, 50035, "Invalid Form Body", {field: {"_errors": [error]}})


@dataclass(frozen=True)
class Upload:
    """A `files[n]` part of a multipart request."""

    index: int
    filename: str
    data: bytes


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON answer with Discord's exact `Content-Type: application/json` (no charset), which
    discord.py checks for by equality."""
    headers = {"Content-Type": "application/json"} | (headers or {})
    return web.Response(body=json.dumps(body).encode(), status=status, headers=headers)


async def read_body(request: web.Request) -> tuple[dict[str, Any], list[Upload]]:
    """A JSON body, or multipart `payload_json` + `files[n]` parts."""
    if request.content_type.startswith("multipart/"):
        payload: dict[str, Any] = {}
        uploads: list[Upload] = []
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            name = part.name or ""  # type: ignore[union-attr]
            if name == "payload_json":
                payload = json.loads(await part.text())  # type: ignore[union-attr]
                continue
            match = _FILE_FIELD.fullmatch(name)
            if match is None:
                raise ApiError(400, 50035, "Invalid Form Body", {name: "unexpected form field"})
            index = int(match.group(1) or match.group(2) or 0)
            data = bytes(await part.read())  # type: ignore[union-attr]
            uploads.append(Upload(index, part.filename or "unknown", data))  # type: ignore[union-attr]
        request[BODY] = (payload, len(uploads))
        return payload, uploads
    if not request.can_read_body:
        return {}, []
    try:
        body = await request.json()
    except ValueError as err:
        raise ApiError(400, 50109, "The request body contains invalid JSON.") from err
    request[BODY] = (body, 0)
    return (body if isinstance(body, dict) else {"_": body}), []


def message_fields(
    hub: FakeDiscord,
    payload: dict[str, Any],
    uploads: list[Upload],
    guild: Guild,
    channel: Channel,
    *,
    existing: Message | None,
    partial: bool = False,
) -> dict[str, Any]:
    """The `Message` fields `payload` sets (all of them on create, only those given on edit)."""
    for upload in uploads:
        if len(upload.data) > guild.upload_limit:
            raise ApiError(413, 40005, "Request entity too large")
    if sum(len(u.data) for u in uploads) > MESSAGE_FILES_LIMIT:
        raise ApiError(413, 40005, "Request entity too large")
    if len(uploads) > 10:
        raise invalid_form("files", "Must be 10 or fewer in length.")
    fields: dict[str, Any] = {}
    if "content" in payload or not partial:
        fields["content"] = payload.get("content") or ""
    if "embeds" in payload or not partial:
        fields["embeds"] = list(payload.get("embeds") or [])
    elif "embed" in payload:
        fields["embeds"] = [payload["embed"]] if payload["embed"] else []
    if "components" in payload or not partial:
        fields["components"] = number_components(list(payload.get("components") or []))
    if "flags" in payload or not partial:
        flags = int(payload.get("flags") or 0)
        if flags & ~SETTABLE_FLAGS:
            raise invalid_form("flags", f"flags {flags} cannot be set by a bot")
        if existing is not None:  # an edit cannot change whether a message is ephemeral
            keep = existing.flags & (~SETTABLE_FLAGS | EPHEMERAL)
            flags &= ~EPHEMERAL
        else:
            keep = 0
        fields["flags"] = keep | flags
    if "attachments" in payload or uploads or not partial:
        kept = existing.files if existing is not None else []
        fields["files"] = apply_attachments(hub, payload, uploads, kept, channel)
    if not partial:
        reference = _reference(hub, payload.get("message_reference"), channel)
        fields["reference"] = reference
        fields["type"] = 19 if reference is not None else 0
    if "embeds" in fields:
        fields["embeds"] = _resolve_attachment_urls(hub, fields["embeds"], fields.get("files"))
    _check(fields, existing)
    return fields


def number_components(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of `components` where every component has Discord's `id`: the ids the bot gave,
    and for the rest the lowest unused numbers from 1, in the order they appear."""
    copies = json.loads(json.dumps(components))
    flat: list[dict[str, Any]] = []

    def walk(items: list[Any]) -> None:
        for item in items:
            if isinstance(item, dict):
                flat.append(item)
                walk(item.get("components") or [])
                if isinstance(item.get("accessory"), dict):
                    walk([item["accessory"]])

    walk(copies)
    taken = {item["id"] for item in flat if isinstance(item.get("id"), int)}
    number = 0
    for item in flat:
        if not isinstance(item.get("id"), int):
            number += 1
            while number in taken:
                number += 1
            item["id"] = number
        if item.get("type") == STRING_SELECT:
            _select_defaults(item)
    return copies


def _select_defaults(select: dict[str, Any]) -> None:
    """A string select as Discord stores it: min/max values filled in, no null fields."""
    for key in [k for k, v in select.items() if v is None]:
        del select[key]
    select.setdefault("min_values", 1)
    select.setdefault("max_values", 1)
    for option in select.get("options") or []:
        for key in [k for k, v in option.items() if v is None]:
            del option[key]


def apply_attachments(
    hub: FakeDiscord,
    payload: dict[str, Any],
    uploads: list[Upload],
    kept: list[StoredFile],
    channel: Channel,
) -> list[StoredFile]:
    """Discord's rule: `attachments` lists what stays (existing ids) and describes new files
    (ids that are `files[n]` indexes); without the key, old files stay and new ones append."""
    by_index = {u.index: u for u in uploads}
    entries = payload.get("attachments")
    if entries is None:
        return list(kept) + [hub.store_upload(u.filename, u.data, channel.id) for u in uploads]
    existing = {str(f.id): f for f in kept}
    result: list[StoredFile] = []
    used: set[int] = set()
    for entry in entries:
        key = str(entry.get("id"))
        if key in existing:
            result.append(existing[key])
            continue
        if not key.isdigit() or int(key) not in by_index:
            raise invalid_form("attachments", f"unknown attachment id {key}")
        upload = by_index[int(key)]
        used.add(upload.index)
        result.append(
            hub.store_upload(
                entry.get("filename") or upload.filename,
                upload.data,
                channel.id,
                description=entry.get("description"),
            )
        )
    for upload in uploads:
        if upload.index not in used:
            result.append(hub.store_upload(upload.filename, upload.data, channel.id))
    return result


def _reference(hub: FakeDiscord, ref: dict[str, Any] | None, channel: Channel) -> Message | None:
    if not ref:
        return None
    target = hub.messages.get(int(ref.get("message_id", 0)))
    if target is None or target.deleted or target.channel_id != channel.id:
        if ref.get("fail_if_not_exists", True):
            raise invalid_form("message_reference", "Unknown message")
        return None
    return target


def _resolve_attachment_urls(
    hub: FakeDiscord, embeds: list[dict[str, Any]], files: list[StoredFile] | None
) -> list[dict[str, Any]]:
    """`attachment://name` in an embed image or thumbnail becomes that file's CDN url."""
    by_name = {f.filename: f for f in files or []}
    resolved = []
    for embed in embeds:
        embed = dict(embed)
        for key in ("image", "thumbnail"):
            url = (embed.get(key) or {}).get("url", "")
            if url.startswith("attachment://") and url[13:] in by_name:
                stored = by_name[url[13:]].payload(hub.url)
                embed[key] = embed[key] | {
                    "url": stored["url"],
                    "proxy_url": stored["proxy_url"],
                    "width": stored.get("width"),
                    "height": stored.get("height"),
                }
        resolved.append(embed)
    return resolved


def _check(fields: dict[str, Any], existing: Message | None) -> None:
    def final(key: str, attr: str) -> Any:
        return fields[key] if key in fields else getattr(existing, attr, None)

    content = final("content", "content") or ""
    embeds = final("embeds", "embeds") or []
    components = final("components", "components") or []
    files = final("files", "files") or []
    if len(content) > 2000:
        raise invalid_form("content", "Must be 2000 or fewer in length.")
    if not (content or embeds or components or files):
        raise ApiError(400, 50006, "Cannot send an empty message")
    _check_embeds(embeds)
    _check_components(
        components,
        bool(final("flags", "flags") or 0) and bool((final("flags", "flags") or 0) & (1 << 15)),
    )


def _check_embeds(embeds: list[dict[str, Any]]) -> None:
    if len(embeds) > 10:
        raise invalid_form("embeds", "Must be 10 or fewer in length.")
    total = 0
    for i, embed in enumerate(embeds):
        limits = {"title": 256, "description": 4096}
        for key, most in limits.items():
            text = embed.get(key) or ""
            total += len(text)
            if len(text) > most:
                raise invalid_form(f"embeds.{i}.{key}", f"Must be {most} or fewer in length.")
        fields = embed.get("fields") or []
        if len(fields) > 25:
            raise invalid_form(f"embeds.{i}.fields", "Must be 25 or fewer in length.")
        for j, field in enumerate(fields):
            if not field.get("name") or not field.get("value"):
                raise invalid_form(f"embeds.{i}.fields.{j}", "This field is required")
            if len(field["name"]) > 256 or len(field["value"]) > 1024:
                raise invalid_form(f"embeds.{i}.fields.{j}", "Field name or value too long.")
            total += len(field["name"]) + len(field["value"])
        footer = (embed.get("footer") or {}).get("text") or ""
        author = (embed.get("author") or {}).get("name") or ""
        if len(footer) > 2048 or len(author) > 256:
            raise invalid_form(f"embeds.{i}", "Footer or author too long.")
        total += len(footer) + len(author)
    if total > 6000:
        raise invalid_form("embeds", "Embed size exceeds maximum size of 6000")


def _check_components(components: list[dict[str, Any]], v2: bool) -> None:
    if not v2 and len(components) > 5:
        raise invalid_form("components", "Must be 5 or fewer in length.")
    seen: set[str] = set()

    def walk(items: list[dict[str, Any]], where: str) -> None:
        for i, item in enumerate(items):
            path = f"{where}.{i}"
            if item.get("type") == 1:
                children = item.get("components") or []
                if not 1 <= len(children) <= 5:
                    raise invalid_form(path, "An action row holds 1 to 5 components.")
                if len(children) > 1 and any(c.get("type") != 2 for c in children):
                    raise invalid_form(path, "A select must be alone in its action row.")
            if item.get("type") == 2:
                _check_button(item, path)
            if item.get("type") == STRING_SELECT:
                _check_select(item, path)
            custom_id = item.get("custom_id")
            if custom_id is not None:
                if not 1 <= len(custom_id) <= 100:
                    raise invalid_form(f"{path}.custom_id", "Must be between 1 and 100 in length.")
                if custom_id in seen:
                    raise invalid_form(
                        f"{path}.custom_id", "Component custom id cannot be duplicated"
                    )
                seen.add(custom_id)
            walk(item.get("components") or [], f"{path}.components")
            if "accessory" in item:
                walk([item["accessory"]], f"{path}.accessory")

    walk(components, "components")


def _check_select(select: dict[str, Any], path: str) -> None:
    """A string select as Discord accepts it (it must also be alone in its action row)."""
    options = select.get("options") or []
    if not select.get("custom_id"):
        raise invalid_form(f"{path}.custom_id", "This field is required")
    if not 1 <= len(options) <= 25:
        raise invalid_form(f"{path}.options", "Must be between 1 and 25 in length.")
    for i, option in enumerate(options):
        for key in ("label", "value"):
            if not 1 <= len(option.get(key) or "") <= 100:
                reason = "Must be between 1 and 100 in length."
                raise invalid_form(f"{path}.options.{i}.{key}", reason)
    if len({option["value"] for option in options}) != len(options):
        raise invalid_form(f"{path}.options", "Select option values must be unique")
    low = select.get("min_values")
    high = select.get("max_values")
    low, high = (1 if low is None else low), (1 if high is None else high)
    if not (0 <= low <= 25 and 1 <= high <= 25 and low <= high <= len(options)):
        reason = "Needs min_values <= max_values <= the number of options."
        raise invalid_form(f"{path}.max_values", reason)


def _check_button(button: dict[str, Any], path: str) -> None:
    style = button.get("style")
    if style == 5:
        if not button.get("url") or "custom_id" in button:
            raise invalid_form(path, "A link button has a url and no custom_id.")
    elif style != 6 and not button.get("custom_id"):
        raise invalid_form(f"{path}.custom_id", "This field is required")
    if len(button.get("label") or "") > 80:
        raise invalid_form(f"{path}.label", "Must be 80 or fewer in length.")


def check_command(body: dict[str, Any]) -> None:
    """Reject command definitions Discord would reject (names, descriptions, option order)."""
    name = body.get("name", "")
    kind = body.get("type", 1)
    if kind in (USER_COMMAND, MESSAGE_COMMAND):  # context menu: a free-form name, nothing else
        if not 1 <= len(name) <= 32 or name != name.strip():
            raise invalid_form("name", f"Invalid command name {name!r}")
        if body.get("description") or body.get("options"):
            raise invalid_form("description", f"{name}: a context menu command has no description")
        return
    if kind != 1:
        raise invalid_form("type", f"{name}: unknown command type {kind!r}")
    if not _COMMAND_NAME.match(name) or name != name.lower():
        raise invalid_form("name", f"Invalid command name {name!r}")
    if not 1 <= len(body.get("description", "")) <= 100:
        raise invalid_form("description", f"/{name}: description must be 1-100 characters")
    _check_options(body.get("options") or [], name)


def _check_options(options: list[dict[str, Any]], where: str) -> None:
    if len(options) > 25:
        raise invalid_form("options", f"{where}: at most 25 options")
    optional_seen = False
    for option in options:
        name = option.get("name", "")
        if not _COMMAND_NAME.match(name) or name != name.lower():
            raise invalid_form("options", f"{where}: invalid option name {name!r}")
        if not 1 <= len(option.get("description", "")) <= 100:
            raise invalid_form("options", f"{where} {name}: description must be 1-100 characters")
        if option.get("type") in (1, 2):
            _check_options(option.get("options") or [], f"{where} {name}")
            continue
        if option.get("required"):
            if optional_seen:
                raise invalid_form("options", f"{where}: required option {name!r} after optional")
        else:
            optional_seen = True
        if len(option.get("choices") or []) > 25:
            raise invalid_form("options", f"{where} {name}: at most 25 choices")
        if option.get("autocomplete") and option.get("choices"):
            raise invalid_form("options", f"{where} {name}: autocomplete cannot have choices")
