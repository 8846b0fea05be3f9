"""Apps on any image: right-click a message or a member → Apps → "Stylize" / "Stylize avatar".

Either answers its invoker privately with a style select; picking a style queues a job on that
picture in the channel, through the same front door as `/stylize`. The select is a
`DynamicItem` whose custom_id names the target (channel, message and picture, or user), so a
pick works after a restart: nothing is kept in memory between the menu and the pick.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import discord
import yarl
from discord import app_commands
from discord.ext import commands

from bot import ask, intake
from bot.errors import friendly
from bot.intake import AttachmentLike
from bot.options import Options
from nst_engine import styles
from nst_engine.api import InputError

if TYPE_CHECKING:
    from bot.app import StyleBot

log = logging.getLogger(__name__)

ANOTHER = "~another"  # the select's hint; no style name has a `~`
MAX_OPTIONS = 25  # Discord's cap on a select's options
AVATAR_SIZE = 4096  # the largest size Discord's CDN serves
PICK = "🎨 Pick a style for this picture; the painting will appear in this channel."
HINT = (
    "To paint it in the style of another picture: reply to its message with `!stylize` and "
    "attach the style picture, or use `/stylize` with `photo` and `style_image`. A result's "
    "`recipe:CODE` works too: `/stylize recipe:CODE`."
)
TYPES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
}


@dataclass(frozen=True)
class Picture:
    """A picture that is not an attachment (an embed's image, an avatar), as intake sees one."""

    url: str
    filename: str = "picture.png"
    size: int = 0  # unknown: the download's byte cap still holds
    content_type: str | None = None
    width: int | None = None
    height: int | None = None


def _picture(url: str, width: int | None = None, height: int | None = None) -> Picture:
    name = yarl.URL(url).name or "picture.png"
    kind = TYPES.get(name.rpartition(".")[2].lower())
    return Picture(url=url, filename=name, content_type=kind, width=width, height=height)


def pictures_of(message: discord.Message) -> list[AttachmentLike]:
    """A message's pictures: its image attachments, then its embeds' images."""
    found: list[AttachmentLike] = [
        a
        for a in message.attachments
        if (a.content_type or "").startswith("image/") or (not a.content_type and a.width)
    ]
    for embed in message.embeds:
        for media in (embed.image, embed.thumbnail):
            url = media.proxy_url or media.url
            if url:
                found.append(_picture(url, media.width, media.height))
    return found


def avatar_of(user: discord.User | discord.Member) -> Picture:
    """The user's own avatar (a server one first) at its largest size; raises `InputError`."""
    if getattr(user, "guild_avatar", None) is None and user.avatar is None:
        raise InputError(f"{user.display_name} has no avatar of their own to paint.")
    return _picture(user.display_avatar.with_size(AVATAR_SIZE).url)


def style_options(server_styles: list[str]) -> list[discord.SelectOption]:
    """The built-ins, as many of the server's own as fit, and the "another picture" hint."""
    options = [
        discord.SelectOption(
            label=s.title[:100], value=name, description=f"{name} · {s.artist}"[:100]
        )
        for name, s in styles.STYLES.items()
    ]
    room = MAX_OPTIONS - len(options) - 1
    options += [
        discord.SelectOption(label=name, value=name, description="This server's own style")
        for name in sorted(server_styles)[:room]
    ]
    options.append(
        discord.SelectOption(
            label="Use another picture as the style…",
            value=ANOTHER,
            description="How to paint with any picture's style",
        )
    )
    return options


class StyleSelect(
    discord.ui.DynamicItem[discord.ui.Select[Any]],
    template=r"sa:(?:m:(?P<channel>\d+):(?P<message>\d+):(?P<index>\d+)|u:(?P<user>\d+))",
):
    """The style select of an app's answer; its custom_id names the picture to paint."""

    def __init__(self, custom_id: str, options: list[discord.SelectOption]) -> None:
        super().__init__(
            discord.ui.Select(custom_id=custom_id, placeholder="Pick a style", options=options)
        )

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> StyleSelect:
        options = item.options if isinstance(item, discord.ui.Select) else []
        return cls(match.string, options)

    async def callback(self, interaction: discord.Interaction[StyleBot]) -> None:
        value = self.item.values[0]
        if value == ANOTHER:
            await interaction.response.send_message(HINT, ephemeral=True)
            return
        studio = interaction.client.studio
        front = ask.InteractionFront(interaction)
        await front.acknowledge()  # Discord waits 3 s; fetching the picture may take longer
        try:
            options = studio.resolve(Options(style=value), interaction.guild_id)
            picture = await self._target(interaction)
            the_ask = ask.from_interaction(interaction, options, [picture], studio.limits)
        except InputError as exc:
            await front.refuse(friendly(exc))
            return
        await studio.take(the_ask)

    async def _target(self, interaction: discord.Interaction[StyleBot]) -> AttachmentLike:
        match = self.template.fullmatch(self.custom_id)
        assert match is not None
        client = interaction.client
        try:
            if match["user"] is not None:
                user_id = int(match["user"])
                if interaction.guild is not None:
                    try:
                        return avatar_of(await interaction.guild.fetch_member(user_id))
                    except discord.NotFound:
                        pass  # no longer a member: their own avatar, then
                return avatar_of(await client.fetch_user(user_id))
            channel = client.get_partial_messageable(int(match["channel"]))
            message = await channel.fetch_message(int(match["message"]))
        except discord.NotFound:
            raise InputError("That picture is gone (deleted, or the user left).") from None
        except discord.HTTPException:
            raise InputError("I can't read that message (Read Message History?).") from None
        found = pictures_of(message)
        index = int(match["index"])
        if index >= len(found):
            raise InputError("That message has no picture any more.")
        return found[index]


def _bot_can_paint(interaction: discord.Interaction) -> None:
    missing = ask.missing_permissions(
        interaction.app_permissions, in_thread=isinstance(interaction.channel, discord.Thread)
    )
    if missing:
        raise InputError(
            f"I can't paint in this channel: I'm missing {', '.join(missing)}. "
            "A server admin can grant it."
        )


class AppsCog(commands.Cog, name="Apps"):
    """The two context-menu apps."""

    def __init__(self, bot: StyleBot) -> None:
        self.bot = bot
        self.menus = [
            app_commands.ContextMenu(name="Stylize", callback=self.on_message),
            app_commands.ContextMenu(name="Stylize avatar", callback=self.on_user),
        ]

    async def cog_load(self) -> None:
        for menu in self.menus:
            self.bot.tree.add_command(menu)

    async def cog_unload(self) -> None:
        for menu in self.menus:
            self.bot.tree.remove_command(menu.name, type=menu.type)

    async def on_message(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """Stylize: the first picture of a message."""
        try:
            found = pictures_of(message)
            if not found:
                raise InputError(
                    "That message has no picture I can paint: pick one with an attached image."
                )
            custom_id = f"sa:m:{message.channel.id}:{message.id}:0"
            await self._offer(interaction, found[0], custom_id)
        except InputError as exc:
            await interaction.response.send_message(friendly(exc), ephemeral=True)

    async def on_user(
        self, interaction: discord.Interaction, user: discord.Member | discord.User
    ) -> None:
        """Stylize avatar: a member's avatar at its largest size."""
        try:
            await self._offer(interaction, avatar_of(user), f"sa:u:{user.id}")
        except InputError as exc:
            await interaction.response.send_message(friendly(exc), ephemeral=True)

    async def _offer(
        self, interaction: discord.Interaction, picture: AttachmentLike, custom_id: str
    ) -> None:
        """The private answer with the style select, once the picture and the channel pass."""
        _bot_can_paint(interaction)
        intake.check_attachment(picture, self.bot.studio.limits)
        names = sorted(self.bot.studio.journal.styles.names(interaction.guild_id))
        view = discord.ui.View(timeout=None)
        view.add_item(StyleSelect(custom_id, style_options(names)))
        await interaction.response.send_message(PICK, view=view, ephemeral=True)
        log.info("user %s: apps offered styles for %s", interaction.user.id, custom_id)
