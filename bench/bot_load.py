"""Load bench: N simulated users x M tiny draft jobs against the real bot and engine.

    python -m bench.bot_load [--users 20] [--jobs 3] [--size 64] [--iterations 6] [--workers N]
                             [--rate-limit 50/1]

Runs on fakecord (the local Discord in tests/fakecord) with the real stylebot and its real
ProcessPoolEngine. Every user posts M `!stylize` commands at once. Prints completed and lost
jobs, p50/p99 time to the bot's first reply and to the result, the largest event-loop lag the
bot's own lag monitor saw, and the order in which users' jobs completed (fairness: with
round-robin scheduling every user gets a k-th result before anyone gets a (k+1)-th).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import logging
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from bot.app import build_bot
from bot.settings import Settings
from nst_engine import styles
from tests.fakecord import FakeDiscord, Message, User

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "chelsea.png"


@dataclass
class Job:
    user: int
    index: int
    message: Message
    posted: float
    first_reply: float | None = None
    result: float | None = None
    replies: list[Message] = field(default_factory=list)


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
    count, _, window = args.rate_limit.partition("/")
    async with FakeDiscord(rate_limit=(int(count), float(window or 1))) as fake:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            discord_token=fake.token,
            workers=args.workers,
            default_quality="draft",
            default_size=args.size,
            max_iterations=args.iterations,
            user_running=1,
            user_waiting=args.jobs - 1,
            guild_jobs=args.users * args.jobs,
            total_jobs=args.users * args.jobs,
            status_interval=1.0,
        )
        bot = build_bot(settings)
        await bot.login(fake.token)
        runner = asyncio.create_task(bot.connect(reconnect=True))
        try:
            await asyncio.wait_for(bot.wait_until_ready(), 300)
            workers = bot.engine.stats().workers if bot.engine is not None else 0
            users: list[User] = [fake.add_user(f"user{u:02d}") for u in range(args.users)]
            bot.lag_monitor.reset()
            jobs: list[Job] = []
            completions: list[int] = []

            def watch(kind: str, message: Message) -> None:
                if kind != "create" or message.reference is None:
                    return
                for job in jobs:
                    if message.reference is not job.message:
                        continue
                    now = time.monotonic()
                    job.replies.append(message)
                    if job.first_reply is None:
                        job.first_reply = now
                    elif job.result is None and any(f.width for f in message.files):
                        job.result = now
                        completions.append(job.user)

            fake.listen(watch)
            started = time.monotonic()
            for index in range(args.jobs):
                for u, user in enumerate(users):
                    style = style_names[(u + index) % len(style_names)]
                    text = f"!stylize {style} seed={index}"
                    message = await fake.post(user, text, files=[("photo.png", photo)])
                    jobs.append(Job(u, index, message, time.monotonic()))
            ticker = asyncio.create_task(progress(jobs, started))
            with contextlib.suppress(TimeoutError):  # what is missing is reported as lost
                await fake.wait_for(lambda: all(j.result for j in jobs), args.timeout)
            ticker.cancel()
            elapsed = time.monotonic() - started
            report(args, jobs, completions, elapsed, bot.lag_monitor.max_lag, workers)
            statuses = [r.status for r in fake.requests if r.at >= started]
            edits = sum(len(m.edits) for m in fake.bot_messages())
            print(
                f"REST requests {len(statuses)} ({statuses.count(429)} answered 429), "
                f"message edits {edits}"
            )
            return 0 if all(j.result for j in jobs) else 1
        finally:
            await bot.close()
            with contextlib.suppress(asyncio.CancelledError):
                await runner


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
    max_lag: float,
    workers: int,
) -> None:
    first = [j.first_reply - j.posted for j in jobs if j.first_reply is not None]
    done = [j.result - j.posted for j in jobs if j.result is not None]
    lost = [j for j in jobs if j.result is None]
    print(
        f"bot_load: {args.users} users x {args.jobs} jobs, {args.size} px draft, "
        f"{args.iterations} iterations, {workers} engine worker(s), "
        f"rate limit {args.rate_limit} per bucket"
    )
    print(f"completed {len(done)}/{len(jobs)}, lost {len(lost)}, wall {elapsed:.1f} s")
    print(
        f"first reply  p50 {percentile(first, 50) * 1000:.0f} ms, "
        f"p99 {percentile(first, 99) * 1000:.0f} ms, max {max(first, default=0) * 1000:.0f} ms"
    )
    if done:
        print(
            f"result       p50 {percentile(done, 50):.1f} s, p99 {percentile(done, 99):.1f} s, "
            f"mean {statistics.fmean(done):.1f} s"
        )
    print(f"largest event-loop lag in the bot: {max_lag * 1000:.0f} ms")
    print(f"completion order (user numbers): {' '.join(f'{u:02d}' for u in completions)}")
    print(f"fairness: {overtakes(completions, args.users)} overtakes (0 = strict round-robin)")
    for job in lost:
        print(f"lost: user{job.user:02d} job {job.index}: {job.message.content!r}")
        for reply in job.replies:
            print(f"    bot said: {' '.join(reply.content.split())[:160]!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--size", type=int, default=64, help="long side of the result, px")
    parser.add_argument("--iterations", type=int, default=6, help="optimisation steps per job")
    parser.add_argument("--workers", type=int, default=None, help="engine workers (auto)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for all")
    parser.add_argument(
        "--rate-limit",
        default="50/1",
        help="REST requests per bucket per window, N/SECONDS (Discord's message routes: 5/5)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
