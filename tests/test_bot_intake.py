"""Intake: attachment metadata checks before download, byte caps, timeouts, header probing."""

from __future__ import annotations

import asyncio
import io
from dataclasses import replace

import pytest
from aiohttp import web
from PIL import Image

from bot.intake import Downloader, IntakeLimits, check_attachment, origin, pick
from bot.settings import Settings
from nst_engine.api import InputError


class Upload:
    """An attachment as intake sees it (the fields of `discord.Attachment`)."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:1/none",
        *,
        name: str = "photo.png",
        size: int = 1000,
        content_type: str | None = "image/png",
        width: int | None = None,
        height: int | None = None,
    ) -> None:
        self.url = url
        self.filename = name
        self.size = size
        self.content_type = content_type
        self.width, self.height = width, height


def png(width: int = 64, height: int = 48) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


LIMITS = IntakeLimits(
    max_bytes=100_000, max_pixels=1_000_000, timeout=2.0, hosts=("http://127.0.0.1:1",)
)


@pytest.mark.parametrize(
    ("att", "message"),
    [
        (Upload(name="big.png", size=200_000), "too big"),
        (Upload(name="notes.txt", size=10, content_type="text/plain"), "not an image"),
        (Upload(name="bomb.png", size=5000, width=20000, height=20000), "too many pixels"),
        (Upload("https://evil.example/a.png", name="a.png"), "not stored on Discord's CDN"),
    ],
)
def test_metadata_refusals(att: Upload, message: str) -> None:
    with pytest.raises(InputError, match=message):
        check_attachment(att, LIMITS)


def test_metadata_accepts_a_plain_image() -> None:
    check_attachment(Upload(size=5000, content_type="image/jpeg", width=640, height=480), LIMITS)
    check_attachment(Upload(size=5000, content_type=None), LIMITS)
    cdn = IntakeLimits()
    check_attachment(Upload("https://cdn.discordapp.com/attachments/1/2/a.png"), cdn)
    with pytest.raises(InputError, match="CDN"):
        check_attachment(Upload("http://127.0.0.1:1/a.png"), cdn)


@pytest.mark.parametrize(
    "url",
    [
        "http://cdn.discordapp.com/attachments/1/2/a.png",  # not https
        "https://cdn.discordapp.com:8443/attachments/1/2/a.png",  # not its port
        "https://cdn.discordapp.com.evil.example/a.png",
        "https://user@evil.example/a.png",
        "ftp://cdn.discordapp.com/a.png",
        "/attachments/1/2/a.png",
    ],
)
def test_discords_cdn_only_over_https_on_its_port(url: str) -> None:
    with pytest.raises(InputError, match="CDN"):
        check_attachment(Upload(url), IntakeLimits())


def test_allowed_origins_match_scheme_host_and_port() -> None:
    limits = IntakeLimits(hosts=("http://127.0.0.1:8080", "https://Media.example"))
    check_attachment(Upload("http://127.0.0.1:8080/a.png"), limits)
    check_attachment(Upload("https://media.example:443/a.png"), limits)
    for url in ("http://127.0.0.1:8081/a.png", "https://127.0.0.1:8080/a.png"):
        with pytest.raises(InputError, match="CDN"):
            check_attachment(Upload(url), limits)
    with pytest.raises(InputError, match="CDN"):
        check_attachment(Upload("http://media.example/a.png"), limits)


@pytest.mark.parametrize(
    "entry", ["ftp://cdn.example", "https://cdn.example/path", "https://u:p@cdn.example", "//"]
)
def test_bad_download_hosts_are_refused_at_start(entry: str) -> None:
    with pytest.raises(ValueError, match="host"):
        origin(entry)
    with pytest.raises(ValueError, match="download_hosts"):
        Settings(_env_file=None, download_hosts=entry)  # type: ignore[call-arg]


class Server:
    """A real HTTP server on loopback with a few bodies, counting what it streamed."""

    def __init__(self) -> None:
        self.sent: dict[str, int] = {}
        self.runner: web.AppRunner | None = None
        self.base = ""

    async def __aenter__(self) -> Server:
        app = web.Application()
        app.router.add_get("/png", self._png)
        app.router.add_get("/endless", self._endless)
        app.router.add_get("/slow", self._slow)
        app.router.add_get("/redirect", self._redirect)
        app.router.add_get("/garbage", self._garbage)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    async def _png(self, request: web.Request) -> web.Response:
        return web.Response(body=png(), content_type="image/png")

    async def _endless(self, request: web.Request) -> web.StreamResponse:
        """200 MiB, chunked (no length), the way a lying server would send it."""
        response = web.StreamResponse()
        await response.prepare(request)
        chunk = b"\0" * 65536
        self.sent["endless"] = 0
        try:
            for _ in range(200 * 16):
                await response.write(chunk)
                self.sent["endless"] += len(chunk)
        except (ConnectionError, RuntimeError):
            pass
        return response

    async def _slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(10)
        return web.Response(body=png())

    async def _redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("https://evil.example/a.png")

    async def _garbage(self, request: web.Request) -> web.Response:
        return web.Response(body=b"GIF89a not really")


async def test_downloads_stream_with_a_hard_cap_and_refuse_what_lies() -> None:
    async with Server() as server:
        downloader = Downloader(replace(LIMITS, hosts=(server.base,)))
        try:
            assert await downloader.read(Upload(f"{server.base}/png")) == png()
            with pytest.raises(InputError, match="too big: more than"):
                await downloader.read(Upload(f"{server.base}/endless", size=1000))
            # reading stopped at the cap: the server got rid of no more than the socket buffers
            # hold, far from the 200 MiB on offer
            await asyncio.sleep(0.2)
            assert server.sent["endless"] < 32 * 1024 * 1024
            with pytest.raises(InputError, match="took longer"):
                await downloader.read(Upload(f"{server.base}/slow"))
            with pytest.raises(InputError, match="couldn't download"):
                await downloader.read(Upload(f"{server.base}/redirect"))
            with pytest.raises(InputError, match=r"photo\.png"):
                await downloader.read(Upload(f"{server.base}/garbage"))
        finally:
            await downloader.close()


async def test_downloads_run_a_few_at_a_time() -> None:
    async with Server() as server:
        downloader = Downloader(replace(LIMITS, hosts=(server.base,)), concurrency=2)
        try:
            started = asyncio.get_running_loop().time()
            slow = [downloader.read(Upload(f"{server.base}/slow")) for _ in range(2)]
            quick = downloader.read(Upload(f"{server.base}/png"))
            results = await asyncio.gather(*slow, quick, return_exceptions=True)
            assert all(isinstance(r, InputError) for r in results[:2])
            # the quick one had to wait for a free slot: the two slow ones timing out
            assert results[2] == png()
            assert asyncio.get_running_loop().time() - started >= LIMITS.timeout
        finally:
            await downloader.close()


def test_pick_photo_and_style_images() -> None:
    a, b, c, r = (Upload(name=n) for n in ("a.png", "b.png", "c.png", "r.png"))
    assert pick([a], [], named=True) == (a, [])
    assert pick([a, b], [], named=False) == (a, [b])
    assert pick([a, b, c], [], named=False) == (a, [b, c])  # two style images blend
    assert pick([a, b], [], named=True) == (a, [b])  # a named style and an image blend
    assert pick([], [r], named=True) == (r, [])
    assert pick([b], [r], named=False) == (r, [b])  # replied photo, attached style
    assert pick([a], [r], named=True) == (a, [])
    assert pick([b, c], [r], named=False, images=2) == (r, [b, c])  # a button's re-run


@pytest.mark.parametrize(
    ("own", "replied", "named", "images", "message"),
    [
        ([], [], True, None, "No image"),
        (["a"] * 6, [], True, None, "Too many attachments: 6"),
        (["a", "b"], [], True, 0, "Too many attachments: 2"),
        (["a"], [], False, None, "I need a style"),
        (["a", "b"], [], False, 2, "I need a style"),
    ],
)
def test_pick_refusals(
    own: list[str], replied: list[str], named: bool, images: int | None, message: str
) -> None:
    own_atts = [Upload(name=f"{n}.png") for n in own]
    with pytest.raises(InputError, match=message):
        pick(own_atts, replied, named=named, images=images)
