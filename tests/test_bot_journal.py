"""The job journal: records, files, resume order, pruning, and surviving kill -9 mid-write."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from bot import ending, journal
from bot.journal import Job, Journal
from bot.options import Options


def make_job(job_id: str, owner: int = 1, **extra: object) -> Job:
    return Job(
        id=job_id,
        owner_id=owner,
        guild_id=10,
        channel_id=20,
        options=Options(style="udnie", size=64, quality="draft", seed=3),
        upload_limit=10_000_000,
        source_id=30,
        **extra,  # type: ignore[arg-type]
    )


def test_a_job_round_trips_with_its_inputs_and_result(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    job = make_job("a1")
    j.add(job, b"photo-bytes", [b"style-bytes"])
    j.update(job, state=journal.WAITING, status_id=99)
    [again] = Journal(tmp_path).unfinished()
    assert again.id == "a1" and again.state == journal.WAITING and again.status_id == 99
    assert again.options == job.options and again.style_images == 1
    assert j.inputs(again) == (b"photo-bytes", [b"style-bytes"])

    j.save_result(job, b"png", {"photo.png": b"copy"})
    assert j.get("a1").state == journal.PAINTED  # type: ignore[union-attr]
    assert j.result(job) == (b"png", {"photo.png": b"copy"})
    j.end(job, journal.DELIVERED)
    assert j.unfinished() == []
    assert not (tmp_path / "jobs" / "a1").exists()  # files go when the job ends


async def test_ending_a_job_removes_its_files_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Removing a job's folder waits on the disk (tens of ms on a busy one): never on the loop."""
    removed_in: list[threading.Thread] = []
    real_rmtree = shutil.rmtree

    def rmtree(path: Path, **kwargs: object) -> None:
        removed_in.append(threading.current_thread())
        real_rmtree(path, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(journal.shutil, "rmtree", rmtree)
    j = Journal(tmp_path)
    job = make_job("e1")
    j.add(job, b"photo-bytes")
    assert await ending.record(j, job, journal.DELIVERED, result_id=5)
    assert removed_in and threading.main_thread() not in removed_in
    assert not (tmp_path / "jobs" / "e1").exists()
    assert job.state == journal.DELIVERED and j.get("e1").result_id == 5  # type: ignore[union-attr]


def test_only_a_job_s_end_checkpoints_the_database(tmp_path: Path) -> None:
    """A checkpoint fsyncs: the writes the bot makes on its event loop never run one (SQLite's
    default runs one in whichever commit finds 1000 pages in the WAL); `end` does."""
    j = Journal(tmp_path)
    job = make_job("w1")
    j.add(job, b"p")
    wal = tmp_path / "stylebot.db-wal"
    page = j._rows("PRAGMA page_size")[0][0]
    for status in range(1500):  # each commit appends at least one page to the WAL
        j.update(job, status_id=status)
    assert wal.stat().st_size > 1200 * page  # no checkpoint reset it along the way
    j.end(job, journal.DELIVERED)
    alone = tmp_path / "copy" / "stylebot.db"  # the database file without its WAL
    alone.parent.mkdir()
    shutil.copyfile(tmp_path / "stylebot.db", alone)
    with contextlib.closing(sqlite3.connect(alone)) as db:
        assert db.execute("SELECT state FROM jobs WHERE id = 'w1'").fetchall() == [("delivered",)]


def test_unfinished_jobs_come_back_in_their_original_order(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    jobs = [make_job(f"j{i}", owner=i % 2) for i in range(5)]
    for job in jobs:
        j.add(job, b"p")
    j.update(jobs[0], state=journal.PAINTING)
    j.end(jobs[2], journal.CANCELLED)
    assert [job.id for job in j.unfinished()] == ["j0", "j1", "j3", "j4"]
    assert j.inputs(jobs[1]) == (b"p", [])


def test_prune_forgets_old_ended_jobs_and_orphan_folders(tmp_path: Path) -> None:
    j = Journal(tmp_path, keep_days=1)
    old, live = make_job("old"), make_job("live")
    j.add(old, b"p")
    j.add(live, b"p")
    j.end(old, journal.FAILED, error="boom")
    (tmp_path / "jobs" / "orphan").mkdir()  # a crash between the files and the record
    assert j.prune(now=time.time() + 2 * 86400) == 1
    assert j.get("old") is None and j.get("live") is not None
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir()) == ["live"]


def test_only_journalled_fields_can_change(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    job = make_job("x")
    j.add(job, b"p")
    with pytest.raises(ValueError, match="not journalled"):
        j.update(job, owner_id=2)
    with pytest.raises(ValueError, match="not an end state"):
        j.end(job, journal.WAITING)


WRITER = textwrap.dedent(
    """
    import sys
    from bot import ending, journal
    from bot.journal import Job, Journal
    from bot.options import Options

    j = Journal(sys.argv[1])
    i = 0
    while True:
        job = Job(id=f"k{i}", owner_id=i, guild_id=1, channel_id=2,
                  options=Options(style="udnie"), upload_limit=1000)
        j.add(job, b"x" * 4096)
        j.update(job, state=journal.WAITING)
        j.update(job, state=journal.PAINTING)
        print(job.id, flush=True)
        i += 1
    """
)


def test_the_journal_survives_kill_9_during_a_burst_of_writes(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert proc.stdout is not None
    committed = [proc.stdout.readline().strip() for _ in range(60)]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    committed += [line.strip() for line in proc.stdout if line.strip()]

    with sqlite3.connect(tmp_path / "stylebot.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    j = Journal(tmp_path)
    found = {job.id: job for job in j.unfinished()}
    for job_id in committed:  # every job the writer saw committed is there, in full
        assert found[job_id].state == journal.PAINTING
        assert j.inputs(found[job_id]) == (b"x" * 4096, [])
    assert j.prune() == 0  # a job caught half-written leaves at most an orphan folder
    assert all(j.inputs(job)[0] == b"x" * 4096 for job in j.unfinished())


def test_a_running_bot_prunes_only_folders_orphaned_long_ago(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    fresh = j.jobs_dir / "0123abcd"  # as `add` leaves it just before the record is written
    fresh.mkdir()
    old = j.jobs_dir / "4567ef01"
    old.mkdir()
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    j.prune(orphan_age=3600)
    assert fresh.exists() and not old.exists()
    j.prune()  # at start, nothing is being added: every orphan goes
    assert not fresh.exists()
