"""The bot token, kept where no other process can read it.

The token comes from, in this order of preference:

- `DISCORD_TOKEN_FILE`: a file holding it (Docker and compose mount secrets at
  `/run/secrets/<name>`). The recommended way: the token never enters any environment.
- `DISCORD_TOKEN` in `.env`: read by the settings, never put into the environment either.
- `DISCORD_TOKEN` in the environment. Linux keeps a process's starting environment in its memory
  and shows it as `/proc/<pid>/environ` to every process of the same user, for the process's
  whole life; `os.environ.pop` changes only Python's copy. So `hide_from_proc` replaces the
  program with itself (`execve`: the same pid, so Docker's PID 1, signals and supervisors see
  one process) under an environment without the token, and hands the token over through an
  inherited pipe that the new program reads once and closes (`take_handoff`). Every child
  (painters, picture decoders, a local Ray) then starts from that clean environment.

Starting the painters before reading the token was the other way considered: it keeps the
painters clean, but leaves the token in the bot's own `/proc/<pid>/environ`, readable by any
process of the user (the painters decode hostile images), and a painter replaced later would
inherit it again. Re-executing cleans both.
"""

from __future__ import annotations

import os
import sys

TOKEN_ENV = "DISCORD_TOKEN"
HANDOFF_ENV = "_STYLEBOT_TOKEN_PIPE"  # the read end's fd number, for the re-executed program
MAX_TOKEN_BYTES = 4096  # far above a Discord token; keeps the write below a pipe's buffer


class TokenHandoffError(RuntimeError):
    """The token could not be handed over to the re-executed program."""


def hide_from_proc() -> None:
    """If `DISCORD_TOKEN` is in the environment, re-execute this very command without it.

    Returns only when there is nothing to hide; otherwise the program starts again with the
    token waiting on a pipe for `take_handoff`.
    """
    token = os.environ.get(TOKEN_ENV)
    if token is None:
        return
    data = token.encode()
    if len(data) > MAX_TOKEN_BYTES:
        raise TokenHandoffError(f"{TOKEN_ENV} is {len(data)} bytes long; a token is far shorter.")
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, data)
    finally:
        os.close(write_end)
    os.set_inheritable(read_end, True)
    env = {key: value for key, value in os.environ.items() if key != TOKEN_ENV}
    env[HANDOFF_ENV] = str(read_end)
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def take_handoff() -> str | None:
    """The token handed over by `hide_from_proc`, read once (the pipe is closed); else None."""
    fd_text = os.environ.pop(HANDOFF_ENV, None)
    if fd_text is None:
        return None
    fd = int(fd_text)
    chunks = []
    try:
        while chunk := os.read(fd, MAX_TOKEN_BYTES):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode()
