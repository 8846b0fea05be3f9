"""Load bench: N simulated users x M tiny draft jobs against the real bot, on Discord's budget.

    python -m bench.bot_load [--users 50] [--jobs 3] [--channels 1] [--size 64]
                             [--iterations 6] [--workers N] [--in-process] [--loop-debug]

Runs on fakecord (the local Discord in tests/fakecord) at Discord's own rate limits (5 message
creates+edits per 5 s per channel, 50 requests/s in all). By default the bot runs in its own
process, as in production (`python -m tests.botproc`), with its real ProcessPoolEngine; every
user posts M `!stylize` commands at once, spread over the channels. Prints completed, lost and
duplicated jobs; p50/p99 time to the first visible answer (a reply to the command, a bot
reaction on it, or a bot message whose text carries the command's jump link, such as a queue
board) and to the result; the total painting time (from the bot's log) and what Discord's
budget needs for the results alone, against the wall time; the largest event-loop lag the bot
saw and its distribution; fairness (the order users got their k-th result); and the traffic.
With --loop-debug the bot runs its loop in asyncio's debug mode (STYLEBOT_LOOP_DEBUG) and the
slowest callbacks it logged are listed (debug mode itself slows the loop: measure lag without it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import logging
import math
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from nst_engine import styles
from tests.fakecord import FakeDiscord, Message, User

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "chelsea.png"
PAINTED = re.compile(r"job \w+: painted in ([0-9.]+) s")
LAG = re.compile(r"largest event-loop lag: (\d+) ms")
LAG_SPREAD = re.compile(r"event-loop lag (p50 .*)")
SLOW = re.compile(r"Executing (.+?) took ([0-9.]+) seconds")
CORO = re.compile(r"coro=<(\S+?)\(\)")
REACTION = re.compile(r"/channels/\d+/messages/(\d+)/reactions/")
JUMP = re.compile(r"https://discord\.com/channels/\d+/\d+/(\d+)")


@dataclass
class Job:
    user: int
    index: int
    message: Message
    posted: float
    first_answer: float | None = None
    answered_by: str = ""  # "reply", "reaction" or "link"
    result: float | None = None
    results: int = 0


@dataclass
class Bot:
    """The bot under load: in this process, or a child whose log is read afterwards."""

    settings: dict[str, str]
    in_process: bool
    log_path: Path = field(default_factory=lambda: Path(tempfile.mkstemp(suffix=".log")[1]))
    proc: asyncio.subprocess.Process | None = None
    inner: object | None = None
    task: asyncio.Task[None] | None = None

    async def start(self, fake: FakeDiscord) -> None:
        if self.in_process:
            from bot.app import build_bot
            from bot.settings import Settings

            values = {k.removeprefix("STYLEBOT_").lower(): v for k, v in self.settings.items()}
            handler = logging.FileHandler(self.log_path)
            logging.getLogger("bot").addHandler(handler)
            logging.getLogger("bot").setLevel(logging.INFO)
            bot = build_bot(Settings(_env_file=None, discord_token=fake.token, **values))  # type: ignore[call-arg]
            self.inner = bot
            self.task = asyncio.create_task(bot.start(fake.token))
            return
        env = {k: v for k, v in os.environ.items() if not k.startswith("STYLEBOT_")}
        env.update(self.settings, DISCORD_TOKEN=fake.token, PYTHONPATH=str(ROOT))
        with self.log_path.open("wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.botproc",
                fake.url,
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )

    async def stop(self) -> None:
        if self.inner is not None:
            await self.inner.close()  # type: ignore[attr-defined]
            with contextlib.suppress(asyncio.CancelledError):
                await self.task  # type: ignore[misc]
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 60)
            except TimeoutError:
                os.killpg(self.proc.pid, signal.SIGKILL)
                await self.proc.wait()

    def ready(self) -> bool:
        """Connected and through its guilds (discord.py's READY handling is done)."""
        if self.inner is not None:
            return self.inner.is_ready()  # type: ignore[attr-defined]
        return "logged in as" in self.log()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def tiny_photo(long_side: int) -> bytes:
    img = Image.open(SAMPLE).convert("RGB")
    img.thumbnail((long_side, long_side))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


def overtakes(order: list[int], users: int) -> int:
    """How often a user got result k+1 while some other user still waited for result k."""
    done = [0] * users
    count = 0
    for user in order:
        done[user] += 1
        count += sum(1 for other in range(users) if done[other] < done[user] - 1)
    return count


async def run(args: argparse.Namespace) -> int:
    photo = tiny_photo(args.size * 2)
    style_names = styles.names()
    settings = {
        "STYLEBOT_DATA_DIR": tempfile.mkdtemp(prefix="stylebot-bench-"),
        "STYLEBOT_DEFAULT_QUALITY": "draft",
        "STYLEBOT_DEFAULT_SIZE": str(args.size),
        "STYLEBOT_MAX_ITERATIONS": str(args.iterations),
        "STYLEBOT_USER_RUNNING": "1",
        "STYLEBOT_USER_WAITING": str(args.jobs - 1),
        "STYLEBOT_GUILD_JOBS": str(args.users * args.jobs),
        "STYLEBOT_TOTAL_JOBS": str(args.users * args.jobs),
        "STYLEBOT_STATUS_INTERVAL": "3",
        "STYLEBOT_DEVICES": "cpu",
        "STYLEBOT_LOG_LEVEL": "INFO",
    }
    if args.workers:
        settings["STYLEBOT_WORKERS"] = str(args.workers)
    if args.loop_debug:
        settings["STYLEBOT_LOOP_DEBUG"] = "true"
    bot = Bot(settings, args.in_process)
    async with FakeDiscord() as fake:
        settings["STYLEBOT_DOWNLOAD_HOSTS"] = fake.url  # its CDN: scheme, host and port
        channels = list(fake.guild.channels)
        while len(channels) < args.channels:
            channels += fake.add_guild(f"server {len(channels)}").channels
        channels = channels[: args.channels]
        await bot.start(fake)
        try:
            users: list[User] = [fake.add_user(f"user{u:02d}") for u in range(args.users)]
            await fake.wait_for(lambda: "IDENTIFY" in fake.gateway_ops, 300)
            await fake.wait_for(lambda: bot.ready(), 300)
            probe = await fake.post(users[0], "!help", channel=channels[0])
            await fake.wait_for(lambda: fake.replies_to(probe), 60)  # the bot answers
            await asyncio.sleep(5)  # let the probe's budget window pass
            jobs: list[Job] = []
            by_message: dict[int, Job] = {}
            completions: list[int] = []

            def answer(job: Job, at: float, how: str) -> None:
                if job.first_answer is None or at < job.first_answer:
                    job.first_answer, job.answered_by = at, how

            def watch(kind: str, message: Message) -> None:
                if kind == "delete" or message.author.id != fake.bot_user.id:
                    return
                now = time.monotonic()
                for linked in JUMP.findall(message.content):  # e.g. a queue board
                    job = by_message.get(int(linked))
                    if job is not None:
                        answer(job, now, "link")
                if kind != "create" or message.reference is None:
                    return
                job = by_message.get(message.reference.id)
                if job is None:
                    return
                answer(job, now, "reply")
                if (
                    any(f.width for f in message.files)
                    and "here is your painting" in message.content
                ):
                    job.results += 1
                    if job.result is None:
                        job.result = now
                        completions.append(job.user)

            fake.listen(watch)
            requests_before = len(fake.requests)
            started = time.monotonic()
            for index in range(args.jobs):
                for u, user in enumerate(users):
                    style = style_names[(u + index) % len(style_names)]
                    channel = channels[u % len(channels)]
                    message = await fake.post(
                        user,
                        f"!stylize {style} seed={index}",
                        files=[("photo.png", photo)],
                        channel=channel,
                    )
                    job = Job(u, index, message, time.monotonic())
                    jobs.append(job)
                    by_message[message.id] = job
            ticker = asyncio.create_task(progress(jobs, started))
            with contextlib.suppress(TimeoutError):  # what is missing is reported as lost
                await fake.wait_for(lambda: all(j.result for j in jobs), args.timeout)
            ticker.cancel()
            elapsed = time.monotonic() - started
            await asyncio.sleep(3)  # a duplicate would show up now
            requests = fake.requests[requests_before:]
            for record in requests:  # a reaction on the command is a visible answer too
                match = REACTION.search(record.path)
                job = by_message.get(int(match[1])) if match else None
                if job is not None and record.status < 300:
                    answer(job, record.at, "reaction")
        finally:
            await bot.stop()
        report(args, jobs, completions, elapsed, bot.log(), requests, fake)
        return 0 if all(j.result for j in jobs) and all(j.results == 1 for j in jobs) else 1


async def progress(jobs: list[Job], started: float, every: float = 15.0) -> None:
    """A line on stderr every `every` seconds, so a long run shows it is alive."""
    while True:
        await asyncio.sleep(every)
        done = sum(1 for j in jobs if j.result is not None)
        elapsed = time.monotonic() - started
        print(f"  {elapsed:5.0f} s: {done}/{len(jobs)} done", file=sys.stderr, flush=True)


def report(
    args: argparse.Namespace,
    jobs: list[Job],
    completions: list[int],
    elapsed: float,
    bot_log: str,
    requests: list,
    fake: FakeDiscord,
) -> None:
    first = [j.first_answer - j.posted for j in jobs if j.first_answer is not None]
    done = [j.result - j.posted for j in jobs if j.result is not None]
    lost = [j for j in jobs if j.result is None]
    duplicated = [j for j in jobs if j.results > 1]
    painting = sum(float(m) for m in PAINTED.findall(bot_log))
    workers = args.workers or 1
    per_channel = math.ceil(len(jobs) / args.channels)
    budget = per_channel  # Discord: 5 creates+edits per 5 s per channel = 1 result/s
    lag = LAG.findall(bot_log)
    where = "in this process" if args.in_process else "in its own process"
    print(
        f"bot_load: {args.users} users x {args.jobs} jobs in {args.channels} channel(s), "
        f"{args.size} px draft, {args.iterations} iterations, bot {where}, Discord's budget"
    )
    print(
        f"completed {len(done)}/{len(jobs)}, lost {len(lost)}, duplicated {len(duplicated)}, "
        f"wall {elapsed:.1f} s"
    )
    print(
        f"painting {painting:.1f} s of work on {workers} worker(s); results alone need "
        f"{budget} s of the busiest channel's budget; "
        f"wall / (painting / workers + budget) = {elapsed / (painting / workers + budget):.2f}"
    )
    how = {k: sum(j.answered_by == k for j in jobs) for k in ("reply", "reaction", "link")}
    print(
        f"first answer p50 {percentile(first, 50) * 1000:.0f} ms, "
        f"p99 {percentile(first, 99) * 1000:.0f} ms, max {max(first, default=0) * 1000:.0f} ms "
        f"({how['reply']} replies, {how['reaction']} reactions, {how['link']} jump links; "
        f"{len(jobs) - len(first)} never answered)"
    )
    if done:
        print(
            f"result       p50 {percentile(done, 50):.1f} s, p99 {percentile(done, 99):.1f} s, "
            f"mean {statistics.fmean(done):.1f} s"
        )
    spread = LAG_SPREAD.findall(bot_log)
    print(
        f"largest event-loop lag in the bot: {lag[-1] if lag else '?'} ms"
        + (f" ({spread[-1]})" if spread else "")
    )
    if args.loop_debug:
        slowest(bot_log)
    print(f"fairness: {overtakes(completions, args.users)} overtakes (0 = strict round-robin)")
    statuses = [r.status for r in requests]
    posts = sum(1 for r in requests if r.method == "POST" and r.route.endswith("/messages"))
    edits = sum(1 for r in requests if r.method == "PATCH" and "/messages/" in r.route)
    print(
        f"REST requests {len(statuses)} ({statuses.count(429)} answered 429): "
        f"{posts} message creates, {edits} edits"
    )
    for job in lost[:10]:
        print(f"lost: user{job.user:02d} job {job.index}: {job.message.content!r}")


def slowest(bot_log: str, top: int = 10) -> None:
    """The callbacks that held the bot's loop longest (asyncio debug mode's log), grouped by
    coroutine or callback: how often, the longest, the total."""
    steps: dict[str, list[float]] = {}
    for what, seconds in SLOW.findall(bot_log):
        coro = CORO.search(what)
        key = coro[1] if coro else re.sub(r" at 0x[0-9a-f]+|when=[0-9.]+ ", "", what)[:120]
        steps.setdefault(key, []).append(float(seconds))
    print(f"slow callbacks (>= 20 ms): {sum(map(len, steps.values()))}")
    ranked = sorted(steps.items(), key=lambda kv: max(kv[1]), reverse=True)
    for key, took in ranked[:top]:
        print(
            f"  {max(took) * 1000:6.0f} ms max, {len(took):4d}x, {sum(took) * 1000:7.0f} ms "
            f"total: {key}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--channels", type=int, default=1, help="spread users over N channels")
    parser.add_argument("--size", type=int, default=64, help="long side of the result, px")
    parser.add_argument("--iterations", type=int, default=6, help="optimisation steps per job")
    parser.add_argument("--workers", type=int, default=None, help="engine workers (auto)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for all")
    parser.add_argument(
        "--in-process", action="store_true", help="run the bot in this process (not as deployed)"
    )
    parser.add_argument(
        "--loop-debug",
        action="store_true",
        help="list the bot's slowest event-loop callbacks (asyncio debug mode)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
