"""How a picture was made, in words: a result's About answer and a user's history."""

from __future__ import annotations

from bot import progress
from bot.journal import Job
from bot.options import IMAGE, Options
from bot.recipes import Recipe

STATES = {
    "accepted": "⏳ accepted",
    "waiting": "⏳ waiting",
    "painting": "🎨 painting",
    "painted": "📤 delivering",
    "delivered": "✅ delivered",
    "failed": "⚠️ failed",
    "cancelled": "🛑 cancelled",
}


def styles_text(options: Options) -> str:
    """The blend for people: `starry-night ×2 + a picture`."""
    return " + ".join(
        ("a picture" if p.name == IMAGE else p.name) + ("" if p.weight == 1 else f" ×{p.weight:g}")
        for p in options.parts()
    )


def jump_url(job: Job) -> str | None:
    """A link to the job's result message, once it is delivered."""
    if job.result_id is None:
        return None
    where = job.guild_id if job.guild_id is not None else "@me"
    return f"https://discord.com/channels/{where}/{job.channel_id}/{job.result_id}"


def about(job: Job, recipe: Recipe | None) -> str:
    """The About answer: styles, options, seed, preset and steps, size, time, device and
    engine, recipe and job id."""
    o = job.options
    made = recipe.made if recipe is not None else {}
    colours = "the photo's colours kept" if o.keep_colors else "full colour"
    steps = made.get("steps")
    lines = [
        f"ℹ️ **How this picture was made** (job `{job.id}`)",
        f"**Styles**: {styles_text(o)}",
        f"**Options**: strength {o.strength:g} · {colours} · seed {o.seed}",
        f"**Preset**: {o.quality}" + (f", {steps} steps" if steps else ""),
        f"**Size**: {made.get('width', '?')}×{made.get('height', '?')} (long side {o.size} px)",
    ]
    if made:
        seconds = progress.duration(made.get("seconds", 0))
        when = f"<t:{int(recipe.created)}:f>" if recipe is not None else ""
        lines.append(f"**Painted**: {when} in {seconds} on {made.get('device', '?')}")
        lines.append(f"**Engine**: {made.get('engine', '?')}")
    if recipe is not None:
        lines.append(f"**Recipe**: `recipe:{recipe.code}` (paste it with a photo after `stylize`)")
    lines.append(f"**Job**: `{job.id}`")
    return "\n".join(lines)


def history_line(job: Job, code: str | None) -> str:
    """One job of a user's history: state, when, styles, recipe and a link to the result."""
    parts = [
        f"`{job.id}` {STATES.get(job.state, job.state)}",
        f"<t:{int(job.created)}:R>",
        styles_text(job.options)[:120],
    ]
    if code is not None:
        parts.append(f"`recipe:{code}`")
    url = jump_url(job)
    if url is not None:
        parts.append(f"[result]({url})")
    return " · ".join(parts)


def history(jobs: list[Job], codes: dict[str, str], where: str) -> str:
    """A user's last jobs, newest first (`where`: "in this server" or "here")."""
    if not jobs:
        return f"You have no jobs {where} yet. Try `/stylize`, or right-click a picture → Apps."
    lines = [history_line(job, codes.get(job.id)) for job in jobs]
    return f"**Your last {len(jobs)} job(s) {where}**, newest first:\n" + "\n".join(lines)
