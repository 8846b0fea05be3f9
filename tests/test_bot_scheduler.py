"""The fair queue: round-robin across users, FIFO per user, caps, positions and cancelling."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from bot.scheduler import CapExceeded, FairQueue, Limits, Scheduler


@dataclass(eq=False)
class Ticket:
    id: str
    owner_id: int
    guild_id: int | None


def ticket(job: str, user: int, guild: int | None = 1) -> Ticket:
    return Ticket(job, user, guild)


def add(q: FairQueue[Ticket], t: Ticket) -> None:
    q.add(t, q.reserve(t.owner_id, t.guild_id))


def submit(s: Scheduler[Ticket], t: Ticket) -> int | None:
    return s.submit(t, s.reserve(t.owner_id, t.guild_id))


def test_round_robin_across_users_fifo_within_a_user() -> None:
    q = FairQueue(Limits(user_running=5, user_waiting=5, guild_jobs=50, total_jobs=50))
    for t in [
        ticket("a1", 1),
        ticket("a2", 1),
        ticket("a3", 1),
        ticket("b1", 2),
        ticket("c1", 3),
        ticket("b2", 2),
    ]:
        add(q, t)
    assert [t.id for t in q.order()] == ["a1", "b1", "c1", "a2", "b2", "a3"]
    started = []
    while (t := q.pop_next()) is not None:
        started.append(t.id)
    assert started == ["a1", "b1", "c1", "a2", "b2", "a3"]


def test_a_user_at_the_running_cap_is_skipped_until_their_job_ends() -> None:
    q = FairQueue(Limits(user_running=1, user_waiting=2))
    a1, a2, b1 = ticket("a1", 1), ticket("a2", 1), ticket("b1", 2)
    for t in (a1, a2, b1):
        add(q, t)
    assert q.pop_next() is a1
    assert q.pop_next() is b1
    assert q.pop_next() is None  # a2 waits: user 1 already runs one
    q.finish(a1)
    assert q.pop_next() is a2


def test_per_user_waiting_cap_refuses_at_once() -> None:
    q = FairQueue(Limits(user_running=1, user_waiting=2))
    add(q, ticket("a1", 1))
    assert q.pop_next() is not None
    add(q, ticket("a2", 1))
    add(q, ticket("a3", 1))
    with pytest.raises(CapExceeded, match="1 running and 2 waiting"):
        add(q, ticket("a4", 1))
    add(q, ticket("b1", 2))  # another user is still welcome


def test_a_user_whose_jobs_all_wait_holds_running_plus_waiting() -> None:
    q = FairQueue(Limits(user_running=1, user_waiting=0, guild_jobs=50, total_jobs=50))
    add(q, ticket("b1", 2))
    assert q.pop_next() is not None  # the only slot is busy with another user's job
    add(q, ticket("a1", 1))  # waits, but within user 1's allowance of one job
    with pytest.raises(CapExceeded, match="0 running and 1 waiting"):
        add(q, ticket("a2", 1))


def test_guild_and_total_caps() -> None:
    q = FairQueue(Limits(user_running=1, user_waiting=5, guild_jobs=2, total_jobs=3))
    add(q, ticket("a1", 1, guild=10))
    add(q, ticket("b1", 2, guild=10))
    with pytest.raises(CapExceeded, match="This server"):
        add(q, ticket("c1", 3, guild=10))
    add(q, ticket("d1", 4, guild=20))
    with pytest.raises(CapExceeded, match="queue is full"):
        add(q, ticket("e1", 5, guild=30))


def test_positions_follow_cancellation() -> None:
    q = FairQueue(Limits(user_running=1, user_waiting=3))
    a1, a2, b1, c1 = ticket("a1", 1), ticket("a2", 1), ticket("b1", 2), ticket("c1", 3)
    for t in (a1, a2, b1, c1):
        add(q, t)
    assert q.positions() == {"a1": 1, "b1": 2, "c1": 3, "a2": 4}
    assert q.remove(b1)
    assert not q.remove(b1)
    assert q.positions() == {"a1": 1, "c1": 2, "a2": 3}


async def test_scheduler_runs_in_fair_order_with_limited_slots() -> None:
    finished: list[str] = []
    moves: list[dict[str, int]] = []
    gates: dict[str, asyncio.Event] = {}

    async def run(t: Ticket) -> None:
        gates[t.id] = asyncio.Event()
        await gates[t.id].wait()
        finished.append(t.id)

    s = Scheduler(Limits(user_running=1, user_waiting=2), slots=1, run=run, on_moved=moves.append)
    assert submit(s, ticket("a1", 1)) is None  # started at once
    assert submit(s, ticket("a2", 1)) == 1
    assert submit(s, ticket("b1", 2)) == 1  # b1 overtakes a2: round-robin
    assert submit(s, ticket("c1", 3)) == 2
    assert moves[-1] == {"b1": 1, "c1": 2, "a2": 3}
    for expected in ("a1", "b1", "c1", "a2"):
        await asyncio.sleep(0)
        gates[expected].set()
        while expected not in finished:
            await asyncio.sleep(0)
    assert finished == ["a1", "b1", "c1", "a2"]
    await s.join()


async def test_stop_returns_waiting_and_refuses_new_jobs() -> None:
    release = asyncio.Event()

    async def run(t: Ticket) -> None:
        await release.wait()

    s = Scheduler(Limits(), slots=1, run=run, on_moved=lambda positions: None)
    submit(s, ticket("a1", 1))
    submit(s, ticket("b1", 2))
    waiting = s.stop()
    assert [t.id for t in waiting] == ["b1"]
    with pytest.raises(CapExceeded, match="shutting down"):
        submit(s, ticket("c1", 3))
    release.set()
    await s.join()
    assert not s.queue.running


def test_reserved_places_count_against_the_caps_until_released() -> None:
    q: FairQueue[Ticket] = FairQueue(Limits(user_running=1, user_waiting=2, total_jobs=4))
    places = [q.reserve(1, 1) for _ in range(3)]  # three downloads in flight for user 1
    with pytest.raises(CapExceeded, match="You already have"):
        q.reserve(1, 1)
    q.release(places[0])
    q.release(places[0])  # releasing twice is harmless
    q.add(ticket("a1", 1), places[1])
    assert q.reserve(1, 1) is not None
    assert len(q) == 3  # a1 waiting, two places held
    q.reserve(2, 1)
    with pytest.raises(CapExceeded, match="queue is full"):
        q.reserve(3, 1)
