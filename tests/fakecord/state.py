"""What the emulated Discord knows: users, one guild's roles and channels, messages and files.

Every object can render itself as the JSON payload Discord sends for it (`payload()`), so the
REST server and the gateway share one source of truth.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import mimetypes
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

DISCORD_EPOCH_MS = 1420070400000

# Permission bits (see Discord's permission table).
ADMINISTRATOR = 1 << 3
ADD_REACTIONS = 1 << 6
SEND_TTS_MESSAGES = 1 << 12
MANAGE_MESSAGES = 1 << 13
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
MENTION_EVERYONE = 1 << 17
USE_APPLICATION_COMMANDS = 1 << 31
SEND_MESSAGES_IN_THREADS = 1 << 38
ALL_PERMISSIONS = (1 << 53) - 1
MEMBER_PERMISSIONS = (
    VIEW_CHANNEL
    | SEND_MESSAGES
    | SEND_MESSAGES_IN_THREADS
    | EMBED_LINKS
    | ATTACH_FILES
    | READ_MESSAGE_HISTORY
    | ADD_REACTIONS
    | USE_APPLICATION_COMMANDS
)
GUILD_TEXT, PUBLIC_THREAD = 0, 11

EPHEMERAL = 1 << 6
LOADING = 1 << 7

_counter = itertools.count()
_counter_lock = threading.Lock()


def snowflake() -> int:
    """A new, unique, time-ordered Discord snowflake."""
    with _counter_lock:
        increment = next(_counter) & 0xFFF
    ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
    return (ms << 22) | (1 << 17) | increment


def iso_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


@dataclass
class User:
    id: int
    name: str
    bot: bool = False
    admin: bool = False
    avatar: bytes | None = None  # the picture the CDN serves at /avatars/{id}/{hash}.png

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"

    @property
    def avatar_hash(self) -> str | None:
        return hashlib.md5(self.avatar).hexdigest() if self.avatar else None

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "username": self.name,
            "global_name": None if self.bot else self.name,
            "discriminator": "0",
            "avatar": self.avatar_hash,
            "bot": self.bot,
            "public_flags": 0,
            "flags": 0,
            "primary_guild": None,
        }


@dataclass
class Overwrite:
    """A channel's permission overwrite for a role (type 0) or a member (type 1)."""

    id: int
    type: int
    allow: int = 0
    deny: int = 0

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "type": self.type,
            "allow": str(self.allow),
            "deny": str(self.deny),
        }


@dataclass
class Role:
    id: int
    name: str
    permissions: int
    position: int

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": self.position,
            "permissions": str(self.permissions),
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }


@dataclass
class Channel:
    """A guild text channel, or a public thread (type 11) in `parent`."""

    id: int
    name: str
    guild_id: int
    position: int = 0
    type: int = GUILD_TEXT
    overwrites: dict[int, Overwrite] = field(default_factory=dict)
    parent: Channel | None = None
    owner_id: int | None = None
    created: str = field(default_factory=iso_now)

    @property
    def is_thread(self) -> bool:
        return self.type == PUBLIC_THREAD

    @property
    def send_permission(self) -> int:
        """What a member needs to post here: SEND_MESSAGES, or in a thread
        SEND_MESSAGES_IN_THREADS."""
        return SEND_MESSAGES_IN_THREADS if self.is_thread else SEND_MESSAGES

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "type": self.type,
            "guild_id": str(self.guild_id),
            "name": self.name,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }
        if self.parent is not None:
            data |= {
                "parent_id": str(self.parent.id),
                "owner_id": str(self.owner_id),
                "message_count": 0,
                "member_count": 1,
                "total_message_sent": 0,
                "thread_metadata": {
                    "archived": False,
                    "archive_timestamp": self.created,
                    "auto_archive_duration": 1440,
                    "locked": False,
                    "create_timestamp": self.created,
                },
            }
            return data
        return data | {
            "position": self.position,
            "permission_overwrites": [o.payload() for o in self.overwrites.values()],
            "topic": None,
            "nsfw": False,
            "parent_id": None,
        }


@dataclass
class Member:
    user: User
    roles: list[int]
    joined_at: str = field(default_factory=iso_now)

    def payload(self, *, with_user: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "nick": None,
            "avatar": None,
            "banner": None,
            "roles": [str(r) for r in self.roles],
            "joined_at": self.joined_at,
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
        }
        if with_user:
            data["user"] = self.user.payload()
        return data


@dataclass
class Guild:
    id: int
    name: str
    owner_id: int
    upload_limit: int
    premium_tier: int = 0
    roles: list[Role] = field(default_factory=list)
    channels: list[Channel] = field(default_factory=list)
    threads: list[Channel] = field(default_factory=list)
    members: dict[int, Member] = field(default_factory=dict)

    @property
    def everyone(self) -> Role:
        return self.roles[0]

    def permissions_of(self, user_id: int) -> int:
        """The member's guild-wide permissions: @everyone and their roles; the owner and
        ADMINISTRATOR have every permission."""
        member = self.members[user_id]
        if user_id == self.owner_id:
            return ALL_PERMISSIONS
        value = self.everyone.permissions
        for role in self.roles:
            if role.id in member.roles:
                value |= role.permissions
        return ALL_PERMISSIONS if value & ADMINISTRATOR else value

    def permissions_in(self, channel: Channel, user_id: int) -> int:
        """The member's permissions in `channel` as Discord computes them: the guild base, then
        the channel's overwrites for @everyone, for the member's roles (together) and for the
        member. A thread follows its parent's overwrites. Without VIEW_CHANNEL nothing is
        allowed; without the permission to send, neither are files, embeds nor mentions."""
        value = self.permissions_of(user_id)
        if value & ADMINISTRATOR:
            return value
        overwrites = (channel.parent or channel).overwrites
        everyone = overwrites.get(self.id)
        if everyone is not None:
            value = (value & ~everyone.deny) | everyone.allow
        allow = deny = 0
        for role_id in self.members[user_id].roles:
            found = overwrites.get(role_id)
            if found is not None and found.type == 0:
                allow, deny = allow | found.allow, deny | found.deny
        value = (value & ~deny) | allow
        own = overwrites.get(user_id)
        if own is not None and own.type == 1:
            value = (value & ~own.deny) | own.allow
        if not value & VIEW_CHANNEL:
            return 0
        if not value & channel.send_permission:
            value &= ~(SEND_TTS_MESSAGES | MENTION_EVERYONE | ATTACH_FILES | EMBED_LINKS)
        return value

    def payload(self) -> dict[str, Any]:
        """The guild object (as `GET /guilds/{id}` returns it)."""
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(self.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 1,
            "explicit_content_filter": 0,
            "roles": [r.payload() for r in self.roles],
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": str(self.channels[0].id),
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "max_members": 500000,
            "vanity_url_code": None,
            "premium_tier": self.premium_tier,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "nsfw_level": 0,
            "nsfw": False,
            "premium_progress_bar_enabled": False,
            "home_header": None,
            "region": "deprecated",
            "widget_enabled": False,
            "widget_channel_id": None,
            "max_presences": None,
            "max_stage_video_channel_users": 50,
            "max_video_channel_users": 25,
            "safety_alerts_channel_id": None,
            "incidents_data": None,
        }

    def create_payload(self) -> dict[str, Any]:
        """The GUILD_CREATE payload: the guild plus channels, members and session extras."""
        data = self.payload()
        data.update(
            {
                "joined_at": iso_now(),
                "large": False,
                "unavailable": False,
                "member_count": len(self.members),
                "members": [m.payload() for m in self.members.values()],
                "channels": [c.payload() for c in self.channels],
                "threads": [t.payload() for t in self.threads],
                "presences": [],
                "voice_states": [],
                "stage_instances": [],
                "guild_scheduled_events": [],
                "soundboard_sounds": [],
            }
        )
        return data


@dataclass(frozen=True)
class AttachmentSpec:
    """A file a user posts, for download-hardening tests (a plain (filename, bytes) tuple is
    the honest case). `lie_size`: the size the attachment payload declares; `stream_bytes`:
    the CDN streams this many bytes (`data`, then zeros, chunked without Content-Length,
    never held in memory); `url_host`: `url` and `proxy_url` point at this host instead."""

    filename: str
    data: bytes = b""
    lie_size: int | None = None
    stream_bytes: int | None = None
    url_host: str | None = None


@dataclass
class StoredFile:
    """An uploaded attachment: its bytes live here and are served by the CDN route."""

    id: int
    filename: str
    data: bytes
    channel_id: int
    content_type: str | None = None
    width: int | None = None
    height: int | None = None
    description: str | None = None
    ephemeral: bool = False
    lie_size: int | None = None  # the size the payload declares, when it lies
    stream_bytes: int | None = None  # what the CDN streams instead of `data`
    url_host: str | None = None  # the host `url` and `proxy_url` name instead of fakecord
    fetches: int = 0  # CDN requests served for this file
    bytes_served: int = 0  # bytes the CDN wrote for it (the client may stop reading sooner)

    @classmethod
    def create(cls, filename: str, data: bytes, channel_id: int, **extra: Any) -> StoredFile:
        guessed, _ = mimetypes.guess_type(filename)
        dims = image_size(data)
        content_type = guessed
        if dims is not None and (guessed is None or not guessed.startswith("image/")):
            content_type = dims[2]
        return cls(
            id=snowflake(),
            filename=filename,
            data=data,
            channel_id=channel_id,
            content_type=content_type,
            width=dims[0] if dims else None,
            height=dims[1] if dims else None,
            **extra,
        )

    @property
    def size(self) -> int:
        return len(self.data)

    def path(self) -> str:
        return f"/attachments/{self.channel_id}/{self.id}/{self.filename}"

    def payload(self, cdn_base: str) -> dict[str, Any]:
        if self.url_host is not None:
            cdn_base = f"http://{self.url_host}"
        data: dict[str, Any] = {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.size if self.lie_size is None else self.lie_size,
            "url": f"{cdn_base}{self.path()}",
            "proxy_url": f"{cdn_base}/media{self.path()}",
            "flags": 0,
        }
        if self.content_type:
            data["content_type"] = self.content_type
        if self.width is not None:
            data["width"] = self.width
            data["height"] = self.height
        if self.description is not None:
            data["description"] = self.description
        if self.ephemeral:
            data["ephemeral"] = True
        return data


@dataclass(frozen=True)
class Revision:
    """One state of a message: the original post, or the result of one edit."""

    content: str
    embeds: list[dict[str, Any]]
    components: list[dict[str, Any]]
    files: list[StoredFile]
    flags: int
    at: float


@dataclass
class Message:
    id: int
    channel_id: int
    guild_id: int
    author: User
    content: str = ""
    files: list[StoredFile] = field(default_factory=list)
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    flags: int = 0
    type: int = 0
    reference: Message | None = None
    mentions: list[User] = field(default_factory=list)
    timestamp: str = field(default_factory=iso_now)
    edited_timestamp: str | None = None
    webhook_id: int | None = None
    application_id: int | None = None
    interaction_metadata: dict[str, Any] | None = None
    nonce: str | int | None = None
    reactions: dict[str, set[int]] = field(default_factory=dict)
    deleted: bool = False
    revisions: list[Revision] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.revisions:
            self.snapshot()

    def snapshot(self) -> None:
        self.revisions.append(
            Revision(
                content=self.content,
                embeds=list(self.embeds),
                components=list(self.components),
                files=list(self.files),
                flags=self.flags,
                at=time.monotonic(),
            )
        )

    @property
    def edits(self) -> list[Revision]:
        """The state after each edit, oldest first (the original post is `revisions[0]`)."""
        return self.revisions[1:]

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def attachments(self) -> list[StoredFile]:
        return self.files

    @property
    def jump_url(self) -> str:
        """The link Discord's clients (and discord.py's Message.jump_url) use for it."""
        return f"https://discord.com/channels/{self.guild_id}/{self.channel_id}/{self.id}"

    def custom_ids(self) -> list[str]:
        """Every enabled component custom_id on the message (buttons and selects)."""
        return [item["custom_id"] for item in self.enabled_components()]

    def enabled_components(self) -> list[dict[str, Any]]:
        """Every enabled component with a custom_id (buttons and selects), in order."""
        found: list[dict[str, Any]] = []

        def walk(items: list[dict[str, Any]]) -> None:
            for item in items:
                if "custom_id" in item and not item.get("disabled", False):
                    found.append(item)
                walk(item.get("components", []))
                if "accessory" in item:
                    walk([item["accessory"]])

        walk(self.components)
        return found

    def payload(
        self, cdn_base: str, *, member: Member | None = None, depth: int = 0
    ) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "type": self.type,
            "channel_id": str(self.channel_id),
            "author": self.author.payload(),
            "content": self.content,
            "timestamp": self.timestamp,
            "edited_timestamp": self.edited_timestamp,
            "tts": False,
            "mention_everyone": False,
            "mentions": [u.payload() for u in self.mentions],
            "mention_roles": [],
            "attachments": [f.payload(cdn_base) for f in self.files],
            "embeds": self.embeds,
            "components": self.components,
            "pinned": False,
            "guild_id": str(self.guild_id),
            "flags": self.flags,
            "reactions": [
                {
                    "emoji": {"id": None, "name": name},
                    "count": len(users),
                    "me": False,
                    "burst_count": 0,
                    "me_burst": False,
                    "burst_colors": [],
                    "count_details": {"burst": 0, "normal": len(users)},
                }
                for name, users in self.reactions.items()
                if users
            ],
        }
        if member is not None:
            data["member"] = member.payload(with_user=False)
        if self.webhook_id:
            data["webhook_id"] = str(self.webhook_id)
        if self.application_id:
            data["application_id"] = str(self.application_id)
        if self.interaction_metadata:
            data["interaction_metadata"] = self.interaction_metadata
        if self.nonce is not None:
            data["nonce"] = self.nonce
        if self.reference is not None:
            ref = self.reference
            data["message_reference"] = {
                "type": 0,
                "message_id": str(ref.id),
                "channel_id": str(ref.channel_id),
                "guild_id": str(ref.guild_id),
            }
            if depth == 0:
                data["referenced_message"] = None if ref.deleted else ref.payload(cdn_base, depth=1)
        return data


def image_size(data: bytes) -> tuple[int, int, str] | None:
    """Width, height and MIME type read from an image header, as Discord's media probe reports.

    Reads only the header, so huge (bomb) dimensions are reported faithfully without decoding.
    """
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return width, height, "image/png"
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return width, height, "image/gif"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return _webp_size(data)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_size(data)
    return None


def _webp_size(data: bytes) -> tuple[int, int, str] | None:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
        return width, height, "image/webp"
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF, "image/webp"
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, "image/webp"
    return None


def _jpeg_size(data: bytes) -> tuple[int, int, str] | None:
    pos = 2
    while pos + 9 < len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height, "image/jpeg"
        pos += 2 + length
    return None
