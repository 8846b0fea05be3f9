"""Buttons as `DynamicItem`s: what they need is in their custom_id or the journal, so they
outlive restarts.

Result buttons carry the action, the owner, the source (the id of the user's message in the same
channel, or `r` when the inputs are attached to the result message itself) and the packed options;
when those don't fit Discord's 100 characters (a blend of long names), `j` and the result's job id
instead: the journal keeps every job's options for `STYLEBOT_KEEP_DAYS`.
The Cancel button on a status message carries the job id.
"""

from __future__ import annotations

import random
import re
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import discord

from bot import ask, provenance
from bot.errors import friendly
from bot.options import MAX_SEED, PACKED, Options, pack, unpack
from nst_engine.api import MAX_STRENGTH, MIN_STRENGTH, InputError

if TYPE_CHECKING:
    from bot.app import StyleBot

STEP = 1.5
MAX_CUSTOM_ID = 100
ACTIONS = {
    "+": "Stronger",
    "-": "Subtler",
    "k": "Keep colours",
    "n": "New seed",
    "b": "Bigger",
}
BIGGER = "b"  # repaint at twice the long side, starting from the result itself


def changed(action: str, options: Options) -> Options:
    """The options a result button asks for."""
    if action == "+":
        return replace(options, strength=min(MAX_STRENGTH, float(f"{options.strength * STEP:.3g}")))
    if action == "-":
        return replace(options, strength=max(MIN_STRENGTH, float(f"{options.strength / STEP:.3g}")))
    if action == "k":
        return replace(options, keep_colors=not options.keep_colors)
    if action == "n":
        return replace(options, seed=random.randint(1, MAX_SEED))
    if action == BIGGER:
        assert options.size is not None
        return replace(options, size=options.size * 2, timelapse=False)
    raise ValueError(f"unknown action {action!r}")


class ResultButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"sb:(?P<action>[+\-knb]):(?P<owner>\d+):(?P<source>\d+|r):"
    r"(?:j(?P<job>[0-9a-f]{1,32})|" + PACKED + ")",
):
    def __init__(
        self,
        action: str,
        owner_id: int,
        source: int | None,
        options: Options | None,
        job_id: str | None = None,
        max_size: int | None = None,
    ) -> None:
        """`options` None: the job's record is gone from the journal (the click is refused).
        With `max_size`, Bigger is disabled on a result already at the largest size."""
        self.action = action
        self.owner_id = owner_id
        self.source = source
        self.options = options
        label = ACTIONS[action]
        disabled = False
        if options is not None:
            if action == "k" and options.keep_colors:
                label = "Full colour"
            disabled = (
                (action == "+" and options.strength >= MAX_STRENGTH)
                or (action == "-" and options.strength <= MIN_STRENGTH)
                or (action == BIGGER and max_size is not None and (options.size or 0) >= max_size)
            )
        where = "r" if source is None else str(source)
        custom_id = f"sb:{action}:{owner_id}:{where}:"
        packed = None if options is None else pack(options)
        if packed is not None and len(custom_id + packed) <= MAX_CUSTOM_ID:
            custom_id += packed
        elif job_id is not None:
            custom_id += f"j{job_id}"
        else:
            raise ValueError("these options need the job id to fit a custom_id")
        style = discord.ButtonStyle.secondary if action == "n" else discord.ButtonStyle.primary
        super().__init__(
            discord.ui.Button(label=label, style=style, custom_id=custom_id, disabled=disabled)
        )

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ResultButton:
        source = None if match["source"] == "r" else int(match["source"])
        job_id = match["job"]
        if job_id is None:
            options: Options | None = unpack(match)
        else:
            job = interaction.client.studio.journal.get(job_id)  # type: ignore[attr-defined]
            options = None if job is None else job.options
        return cls(match["action"], int(match["owner"]), source, options, job_id)

    async def callback(self, interaction: discord.Interaction[StyleBot]) -> None:
        if interaction.user.id != self.owner_id:
            await interaction.response.send_message(
                f"These buttons belong to <@{self.owner_id}>. Use `/stylize` to make your own.",
                ephemeral=True,
                allowed_mentions=discord.AllowedMentions.none(),
            )
            return
        studio = interaction.client.studio
        if self.options is None:
            await interaction.response.send_message(
                "That result is too old to re-run; please ask again.", ephemeral=True
            )
            return
        # Discord waits 3 s for a first answer: defer before anything that talks to Discord
        # (fetching the original message). Refusals then edit the private "thinking" note.
        front = ask.InteractionFront(interaction)
        await front.acknowledge()
        try:
            if self.action == BIGGER and (self.options.size or 0) >= studio.settings.max_size:
                raise InputError("That picture is already as big as I paint.")
            options = studio.resolve(changed(self.action, self.options), interaction.guild_id)
            the_ask = await ask.from_button(
                interaction, self.source, options, studio.limits, bigger=self.action == BIGGER
            )
        except InputError as exc:
            await front.refuse(friendly(exc))
            return
        await studio.take(the_ask)


class CancelButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"sb:c:(?P<job>[0-9a-f]{1,32})"
):
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(
            discord.ui.Button(
                label="Cancel", style=discord.ButtonStyle.danger, custom_id=f"sb:c:{job_id}"
            )
        )

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> CancelButton:
        return cls(match["job"])

    async def callback(self, interaction: discord.Interaction[StyleBot]) -> None:
        await interaction.client.studio.cancel_from_button(interaction, self.job_id)


class AboutButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"sb:i:(?P<job>[0-9a-f]{1,32})"
):
    """ℹ️ About: how the result was made, told privately to whoever presses it."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(
            discord.ui.Button(
                label="ℹ️ About",
                style=discord.ButtonStyle.secondary,
                custom_id=f"sb:i:{job_id}",
            )
        )

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> AboutButton:
        return cls(match["job"])

    async def callback(self, interaction: discord.Interaction[StyleBot]) -> None:
        journal = interaction.client.studio.journal
        job = journal.get(self.job_id)
        if job is None:
            text = "That result is too old: I no longer know how it was made."
        else:
            text = provenance.about(job, journal.recipes.of_job(self.job_id))
        await interaction.response.send_message(
            text, ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
        )


def result_view(
    owner_id: int, source: int | None, options: Options, job_id: str, max_size: int
) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for action in ACTIONS:
        view.add_item(ResultButton(action, owner_id, source, options, job_id, max_size))
    view.add_item(AboutButton(job_id))
    return view


def cancel_view(job_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id))
    return view
