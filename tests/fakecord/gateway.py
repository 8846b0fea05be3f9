"""The gateway websocket: HELLO, IDENTIFY/READY, heartbeats, sequenced dispatch, RESUME replay.

It speaks JSON over the compressed transport the client asks for in its query string
(`compress=zstd-stream` or `compress=zlib-stream`), or plain text frames when none is asked.
Each IDENTIFY opens a session that keeps a log of its dispatched events, so a client that
drops and RESUMEs gets every event it missed, then RESUMED.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import WSMsgType, web

try:  # discord.py only asks for zstd-stream when zstandard is installed
    import zstandard
except ImportError:  # pragma: no cover - depends on the environment
    zstandard = None

log = logging.getLogger(__name__)

DISPATCH, HEARTBEAT, IDENTIFY, PRESENCE_UPDATE = 0, 1, 2, 3
RESUME, RECONNECT, REQUEST_GUILD_MEMBERS, INVALID_SESSION = 6, 7, 8, 9
HELLO, HEARTBEAT_ACK = 10, 11

# Close codes Discord uses (a client may resume after any of them except the last four).
UNKNOWN_OPCODE, DECODE_ERROR, NOT_AUTHENTICATED = 4001, 4002, 4003
AUTHENTICATION_FAILED, ALREADY_AUTHENTICATED, DISALLOWED_INTENTS = 4004, 4005, 4014

MESSAGE_CONTENT_INTENT = 1 << 15
PRIVILEGED_INTENTS = (1 << 1) | (1 << 8) | MESSAGE_CONTENT_INTENT  # members, presences, content
REPLAY_LOG_SIZE = 5000
ACK_DELAY = 0.1


class Hub(Protocol):
    """What the gateway needs from the emulator that owns it."""

    token: str
    latency: float
    privileged_intents: int

    def ready_payload(self, session_id: str) -> dict[str, Any]: ...

    def guild_payloads(self) -> list[dict[str, Any]]: ...

    def member_chunk(self, guild_id: int, nonce: str | None) -> dict[str, Any]: ...

    def gateway_op(self, name: str) -> None: ...


class _Compressor(Protocol):
    def __call__(self, data: bytes) -> bytes: ...


def _compressor(kind: str | None) -> _Compressor | None:
    if kind == "zlib-stream":
        stream = zlib.compressobj()
        return lambda data: stream.compress(data) + stream.flush(zlib.Z_SYNC_FLUSH)
    if kind == "zstd-stream" and zstandard is not None:
        zstream = zstandard.ZstdCompressor().compressobj()
        return lambda data: (
            zstream.compress(data) + zstream.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        )
    return None


class Connection:
    """One websocket: frames go out in order through one writer task (the stream is stateful)."""

    def __init__(self, ws: web.WebSocketResponse, compress: str | None, latency: float) -> None:
        self.ws = ws
        self._compress = _compressor(compress)
        self._latency = latency
        self._queue: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()
        self._writer = asyncio.create_task(self._write())

    def send(self, frame: dict[str, Any], *, at_least: float = 0.0) -> None:
        self._queue.put_nowait((time.monotonic() + max(self._latency, at_least), frame))

    async def _write(self) -> None:
        while True:
            due, frame = await self._queue.get()
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.ws.closed:
                return
            text = json.dumps(frame, separators=(",", ":"))
            try:
                if self._compress is None:
                    await self.ws.send_str(text)
                else:
                    await self.ws.send_bytes(self._compress(text.encode()))
            except (ConnectionError, RuntimeError):
                return

    async def close(self, code: int, message: str = "") -> None:
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer
        if not self.ws.closed:
            await self.ws.close(code=code, message=message.encode())


@dataclass
class Session:
    id: str
    intents: int
    seq: int = 0
    conn: Connection | None = None
    log: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=REPLAY_LOG_SIZE))

    def dispatch(self, event: str, data: dict[str, Any]) -> None:
        self.seq += 1
        frame = {"op": DISPATCH, "t": event, "s": self.seq, "d": data}
        self.log.append(frame)
        if self.conn is not None:
            self.conn.send(frame)


class Gateway:
    def __init__(self, hub: Hub, heartbeat_interval_ms: int = 41250) -> None:
        self.hub = hub
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.sessions: dict[str, Session] = {}
        self.transports: list[str] = []  # the `compress` each connection asked for ("" = none)
        self._open = asyncio.Event()
        self._open.set()
        self._reopen: asyncio.TimerHandle | None = None

    def dispatch(
        self,
        event: str,
        data: dict[str, Any] | Callable[[int], dict[str, Any]],
        intent: int | None = None,
    ) -> None:
        """Send an event to every session whose intents include `intent` (None: always).

        `data` may be a function of the session's intents (for message-content redaction).
        """
        for session in self.sessions.values():
            if intent is not None and not session.intents & intent:
                continue
            session.dispatch(event, data(session.intents) if callable(data) else data)

    @property
    def connected(self) -> bool:
        return any(s.conn is not None for s in self.sessions.values())

    async def drop(self, code: int = 4000, down_for: float = 0.0) -> None:
        """Close every live connection with `code`; refuse HELLO to new ones for `down_for` s."""
        if down_for > 0:
            self._open.clear()
            if self._reopen is not None:
                self._reopen.cancel()
            self._reopen = asyncio.get_running_loop().call_later(down_for, self._open.set)
        for session in self.sessions.values():
            conn, session.conn = session.conn, None
            if conn is not None:
                await conn.close(code, "dropped by the emulator")

    def reconnect(self) -> None:
        """Ask every client to reconnect and resume (opcode 7), as Discord does before a deploy."""
        for session in self.sessions.values():
            if session.conn is not None:
                session.conn.send({"op": RECONNECT, "d": None})

    async def close(self) -> None:
        if self._reopen is not None:
            self._reopen.cancel()
        self._open.set()
        for session in self.sessions.values():
            conn, session.conn = session.conn, None
            if conn is not None:
                await conn.close(1001, "emulator shutting down")

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=4 * 1024 * 1024)
        await ws.prepare(request)
        await self._open.wait()
        if request.query.get("encoding", "json") != "json":
            await ws.close(code=DECODE_ERROR, message=b"only encoding=json is emulated")
            return ws
        self.transports.append(request.query.get("compress", ""))
        conn = Connection(ws, request.query.get("compress"), self.hub.latency)
        conn.send({"op": HELLO, "d": {"heartbeat_interval": self.heartbeat_interval_ms}})
        session: Session | None = None
        client_code: int | None = None
        try:
            while True:
                msg = await ws.receive()
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                    client_code = msg.data if msg.type is WSMsgType.CLOSE else None
                    break
                if msg.type is not WSMsgType.TEXT:
                    await conn.close(DECODE_ERROR, "expected text frames")
                    break
                try:
                    frame = json.loads(msg.data)
                    op, data = frame["op"], frame.get("d")
                except (ValueError, KeyError, TypeError):
                    await conn.close(DECODE_ERROR, "invalid payload")
                    break
                session = await self._on_frame(conn, session, op, data)
        finally:
            if session is not None and session.conn is conn:
                session.conn = None
                if client_code in (1000, 1001):  # a clean close ends the session (no resume)
                    del self.sessions[session.id]
            await conn.close(1000)
        return ws

    async def _on_frame(
        self, conn: Connection, session: Session | None, op: int, data: Any
    ) -> Session | None:
        if op == HEARTBEAT:
            # A real ACK takes a round trip. An instant one (same loop) can beat discord.py's
            # heartbeat thread to recording its send time, and it then warns it is "behind".
            conn.send({"op": HEARTBEAT_ACK}, at_least=ACK_DELAY)
            return session
        if op == IDENTIFY:
            self.hub.gateway_op("IDENTIFY")
            if session is not None:
                await conn.close(ALREADY_AUTHENTICATED, "already authenticated")
                return session
            if data.get("token") != self.hub.token:
                await conn.close(AUTHENTICATION_FAILED, "authentication failed")
                return None
            intents = int(data.get("intents", 0))
            if intents & PRIVILEGED_INTENTS & ~self.hub.privileged_intents:
                await conn.close(DISALLOWED_INTENTS, "Disallowed intent(s).")
                return None
            return self._identify(conn, intents)
        if op == RESUME:
            self.hub.gateway_op("RESUME")
            return await self._resume(conn, data)
        if session is None:
            await conn.close(NOT_AUTHENTICATED, "not authenticated")
            return None
        if op == REQUEST_GUILD_MEMBERS:
            self.hub.gateway_op("REQUEST_GUILD_MEMBERS")
            session.dispatch(
                "GUILD_MEMBERS_CHUNK",
                self.hub.member_chunk(int(data["guild_id"]), data.get("nonce")),
            )
            return session
        if op == PRESENCE_UPDATE:
            self.hub.gateway_op("PRESENCE_UPDATE")
            return session
        await conn.close(UNKNOWN_OPCODE, f"unknown opcode {op}")
        return session

    def _identify(self, conn: Connection, intents: int) -> Session:
        session = Session(id=secrets.token_hex(16), intents=intents, conn=conn)
        self.sessions[session.id] = session
        session.dispatch("READY", self.hub.ready_payload(session.id))
        for guild in self.hub.guild_payloads():
            session.dispatch("GUILD_CREATE", guild)
        log.debug("gateway session %s identified", session.id)
        return session

    async def _resume(self, conn: Connection, data: dict[str, Any]) -> Session | None:
        session = self.sessions.get(data.get("session_id", ""))
        seq = data.get("seq") or 0
        oldest = session.log[0]["s"] if session and session.log else 1
        if (
            session is None
            or data.get("token") != self.hub.token
            or seq > session.seq
            or seq + 1 < oldest
        ):
            conn.send({"op": INVALID_SESSION, "d": False})
            return None
        if session.conn is not None and session.conn is not conn:
            await session.conn.close(4000, "session resumed elsewhere")
        session.conn = conn
        missed = [frame for frame in session.log if frame["s"] > seq]
        for frame in missed:
            conn.send(frame)
        session.dispatch("RESUMED", {"_trace": ["fakecord"]})
        log.debug("gateway session %s resumed, %d events replayed", session.id, len(missed))
        return session
