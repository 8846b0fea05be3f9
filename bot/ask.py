"""The front door: every way of asking for a painting becomes one `Ask`.

A prefix command, a slash command and a result button each build an `Ask` here: options
resolved with the bot's defaults and caps, the photo and style attachments picked and checked
from their metadata, the bot's own permissions in the channel, and a `Front` that knows how to
answer on that path (a reply, or in a crowd a line on the queue board, for a message; ephemeral
notes and a follow-up for an interaction). `Studio.take(ask)` does the rest, the same way for
all of them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

import discord

from bot import intake
from bot.board import Boards
from bot.intake import AttachmentLike, IntakeLimits
from bot.options import Options
from bot.traffic import ANSWER, Traffic
from nst_engine.api import InputError

log = logging.getLogger(__name__)

DEFAULT_UPLOAD = 10 * 1024 * 1024

# What the bot needs in a channel to take a job there, as discord.Permissions attribute names.
NEEDED = {
    "view_channel": "View Channel",
    "send_messages": "Send Messages",
    "attach_files": "Attach Files",
    "read_message_history": "Read Message History",
}


def missing_permissions(perms: discord.Permissions, *, in_thread: bool) -> list[str]:
    """The names of the permissions the bot lacks to paint in a channel (empty: none)."""
    needed = dict(NEEDED)
    if in_thread:
        needed["send_messages_in_threads"] = "Send Messages in Threads"
        del needed["send_messages"]
    return [label for attr, label in needed.items() if not getattr(perms, attr)]


class Front(Protocol):
    """How a job's asker is answered, on the path the ask came by."""

    async def acknowledge(self) -> None:
        """Called once the ask is under the caps, before the (slow) download."""

    async def refuse(self, text: str) -> None:
        """Tell only the asker, in one line, that nothing was queued."""

    async def answer(self, text: str, view: discord.ui.View) -> int | None:
        """The first visible answer for an accepted job: the id of a status message the bot
        may edit later, or None when the answer was lighter (a line on the queue board)."""


class MessageFront:
    """A prefix command: a status reply while the channel is quiet and its budget has room,
    else a line on the channel's queue board, which answers a crowd with one message."""

    def __init__(
        self, message: discord.Message, traffic: Traffic, boards: Boards, may_speak: bool
    ) -> None:
        self.message = message
        self.traffic = traffic
        self.boards = boards
        self.may_speak = may_speak

    async def acknowledge(self) -> None:
        return None  # the answer comes as soon as the photo is in

    async def refuse(self, text: str) -> None:
        if not self.may_speak:
            log.info("not allowed to answer in channel %s: %s", self.message.channel.id, text)
            return
        try:
            await self.traffic.send(
                self.message.channel.id,
                ANSWER,
                lambda: self.message.reply(
                    text, mention_author=False, allowed_mentions=discord.AllowedMentions.none()
                ),
            )
        except discord.HTTPException as exc:
            log.warning("could not answer message %s: %s", self.message.id, exc)

    async def answer(self, text: str, view: discord.ui.View) -> int | None:
        channel_id = self.message.channel.id
        if not self.boards.crowded(channel_id) and self.traffic.room(channel_id):
            sent = await self.traffic.send(
                channel_id,
                ANSWER,
                lambda: self.message.reply(text, view=view, mention_author=False),
            )
            return sent.id
        self.boards.add(self.message)
        return None


class InteractionFront:
    """A slash command or a button: ephemeral notes to the asker, a public status follow-up.

    The interaction is deferred ephemerally, so every refusal stays private; the public status
    is a follow-up, which uses the interaction's own budget rather than the channel's.
    """

    def __init__(self, interaction: discord.Interaction) -> None:
        self.interaction = interaction

    async def acknowledge(self) -> None:
        if not self.interaction.response.is_done():
            await self.interaction.response.defer(ephemeral=True, thinking=True)

    async def refuse(self, text: str) -> None:
        try:
            if self.interaction.response.is_done():
                await self.interaction.edit_original_response(content=text)
            else:
                await self.interaction.response.send_message(text, ephemeral=True)
        except discord.HTTPException as exc:
            log.warning("could not answer interaction %s: %s", self.interaction.id, exc)

    async def answer(self, text: str, view: discord.ui.View) -> int | None:
        await self.acknowledge()
        await self.interaction.edit_original_response(content="👍 On its way; see below.")
        sent = await self.interaction.followup.send(text, view=view, wait=True)
        return sent.id


@dataclass
class Ask:
    """One request for a painting, checked as far as it can be before anything is downloaded."""

    owner_id: int
    guild_id: int | None
    channel_id: int
    options: Options  # its blend counts `style_images`
    photo: AttachmentLike
    style_images: list[AttachmentLike]
    permissions: discord.Permissions  # the bot's own, in the channel
    in_thread: bool
    upload_limit: int  # for files the bot uploads with its own token: the server's limit
    front: Front
    source_id: int | None = None  # the user's message, which results reply to
    inputs_on_result: bool = False  # no message holds the inputs: carry them on the result
    start: AttachmentLike | None = None  # Bigger: the earlier result the painting starts from
    # a recipe's picture-style copies: its blend's first `~` parts, before any attached image
    kept_styles: list[bytes] = field(default_factory=list)


def _checked(
    own: list[AttachmentLike],
    replied: list[AttachmentLike],
    options: Options,
    limits: IntakeLimits,
    *,
    rerun: bool = False,
) -> tuple[AttachmentLike, list[AttachmentLike], Options]:
    """The photo, the style images, and the options with those images in their blend.

    A re-run (`rerun`) takes exactly the style images its blend already counts."""
    photo, styles = intake.pick(
        own, replied, named=options.style is not None, images=options.images if rerun else None
    )
    if not rerun:
        options = options.with_images(len(styles))
    for att in (photo, *styles):
        intake.check_attachment(att, limits)
    return photo, styles, options


def _upload_limit(guild: discord.Guild | None) -> int:
    return guild.filesize_limit if guild is not None else DEFAULT_UPLOAD


async def replied_attachments(message: discord.Message) -> list[AttachmentLike]:
    """The attachments of the message this one replies to (same channel only)."""
    ref = message.reference
    if ref is None or ref.message_id is None or ref.channel_id != message.channel.id:
        return []
    replied = ref.resolved
    if not isinstance(replied, discord.Message):
        try:
            replied = await message.channel.fetch_message(ref.message_id)
        except discord.HTTPException:
            return []
    return list(replied.attachments)


async def from_message(
    message: discord.Message,
    me: discord.abc.User,
    options: Options,
    limits: IntakeLimits,
    traffic: Traffic,
    boards: Boards,
) -> Ask:
    """A prefix command's ask (`options` already resolved); raises `InputError`."""
    channel = message.channel
    perms = (
        channel.permissions_for(me)  # type: ignore[arg-type]
        if isinstance(me, discord.Member)
        else discord.Permissions.all()  # a DM
    )
    in_thread = isinstance(channel, discord.Thread)
    speak = perms.send_messages_in_threads if in_thread else perms.send_messages
    front = MessageFront(message, traffic, boards, may_speak=perms.view_channel and speak)
    photo, styles, options = _checked(
        list(message.attachments), await replied_attachments(message), options, limits
    )
    return Ask(
        owner_id=message.author.id,
        guild_id=message.guild.id if message.guild else None,
        channel_id=channel.id,
        options=options,
        photo=photo,
        style_images=styles,
        permissions=perms,
        in_thread=in_thread,
        upload_limit=_upload_limit(message.guild),
        front=front,
        source_id=message.id,
    )


def from_interaction(
    interaction: discord.Interaction,
    options: Options,
    attachments: list[AttachmentLike],
    limits: IntakeLimits,
    *,
    source_id: int | None = None,
    replied: list[AttachmentLike] | None = None,
    rerun: bool = False,
) -> Ask:
    """A slash command's or a button's ask (`options` already resolved); raises `InputError`.

    With `source_id` (a button under a prefix job's result) results reply to that message;
    without, the inputs ride on the result message.
    """
    channel = interaction.channel
    if channel is None or interaction.channel_id is None:
        raise InputError("I can't see this channel.")
    photo, styles, options = _checked(attachments, replied or [], options, limits, rerun=rerun)
    return Ask(
        owner_id=interaction.user.id,
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id,
        options=options,
        photo=photo,
        style_images=styles,
        permissions=interaction.app_permissions,
        in_thread=isinstance(channel, discord.Thread),
        upload_limit=_upload_limit(interaction.guild),
        front=InteractionFront(interaction),
        source_id=source_id,
        inputs_on_result=source_id is None,
    )


async def from_button(
    interaction: discord.Interaction,
    source_id: int | None,
    options: Options,
    limits: IntakeLimits,
    *,
    bigger: bool = False,
) -> Ask:
    """A result button's ask: the same inputs as the result's job, with changed options.

    The inputs are the user's original message (`source_id`), fetched again, or the copies
    carried on the result message itself. `bigger` also starts from the result's picture.
    """
    holder = interaction.message
    if holder is None or not holder.attachments:
        raise InputError("I can't find the message these buttons were on.")
    start: AttachmentLike | None = None
    if bigger:
        start = holder.attachments[0]
        intake.check_attachment(start, limits)
    if source_id is None:
        copies: list[AttachmentLike] = [
            a for a in holder.attachments[1:] if not a.filename.startswith("timelapse")
        ]
        if len(copies) < 1 + options.images:
            raise InputError("The images of that job are gone, so I can't re-run it.")
        the_ask = from_interaction(
            interaction, options, copies[: 1 + options.images], limits, rerun=True
        )
        the_ask.start = start
        return the_ask
    channel = interaction.channel
    if not isinstance(channel, discord.abc.Messageable):
        raise InputError("I can't see this channel any more.")
    try:
        original = await channel.fetch_message(source_id)
    except discord.NotFound:
        raise InputError("The original message was deleted, so I can't re-run it.") from None
    except discord.HTTPException:
        raise InputError("I can't read the original message (Read Message History?).") from None
    the_ask = from_interaction(
        interaction,
        options,
        list(original.attachments),
        limits,
        source_id=source_id,
        replied=await replied_attachments(original),
        rerun=True,
    )
    the_ask.start = start
    return the_ask
