"""images.py: hostile input is refused with one readable line; good input comes out as RGB."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import EpsImagePlugin, Image, ImageStat

from nst_engine import images
from nst_engine.api import InputError

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def _encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **params)
    return out.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_claiming(width: int, height: int) -> bytes:
    """A small, well-formed PNG whose header claims the given dimensions."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 4096))
        + _png_chunk(b"IEND", b"")
    )


EPS = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n%%EndComments\n"
    b"newpath 0 0 moveto 64 64 lineto stroke\nshowpage\n%%EOF\n"
)


def _bad_inputs() -> dict[str, tuple[bytes, str]]:
    png = (SAMPLES / "chelsea.png").read_bytes()
    jpeg = (SAMPLES / "rocket.jpg").read_bytes()
    rgb = Image.new("RGB", (64, 64), (200, 30, 30))
    return {
        "empty": (b"", "empty"),
        "text": (b"just some words, not a picture\n" * 20, "isn't an image"),
        "truncated png": (png[: len(png) // 2], "damaged or cut short"),
        "truncated jpeg": (jpeg[: len(jpeg) // 3], "damaged or cut short"),
        "png cut inside its header": (png[:64], "damaged or cut short"),
        "giant dimensions": (_png_claiming(100_000, 100_000), "too large"),
        "over the pixel cap": (_png_claiming(12_000, 12_000), "12000×12000"),
        "eps": (EPS, "isn't an image"),
        "bmp": (_encode(rgb, "BMP"), "isn't an image"),
        "tiff": (_encode(rgb, "TIFF"), "isn't an image"),
        "one by 2000 strip": (_encode(Image.new("RGB", (1, 2000)), "PNG"), "too small"),
        "40 by 2000 strip": (_encode(Image.new("RGB", (40, 2000)), "PNG"), "long and thin"),
        "tiny": (_encode(Image.new("RGB", (8, 8)), "PNG"), "too small"),
    }


BAD = _bad_inputs()


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_raises_one_readable_line(name: str) -> None:
    data, phrase = BAD[name]
    with pytest.raises(InputError) as caught:
        images.decode(data)
    message = str(caught.value)
    assert phrase in message
    assert "\n" not in message
    assert message[0].isupper() and message.endswith((".", "?"))


@pytest.mark.parametrize("name", ["empty", "text", "giant dimensions", "eps", "bmp", "tiny"])
def test_probe_refuses_what_decode_refuses(name: str) -> None:
    data, phrase = BAD[name]
    with pytest.raises(InputError, match=phrase):
        images.probe(data)


def test_probe_reads_only_the_header() -> None:
    png = (SAMPLES / "chelsea.png").read_bytes()
    info = images.probe(png[:6000])  # the pixels are cut off; the header is intact
    assert info == images.ImageInfo("PNG", 451, 300)
    jpeg = (SAMPLES / "rocket.jpg").read_bytes()
    assert images.probe(jpeg) == images.ImageInfo("JPEG", 640, 427)


def test_eps_never_reaches_its_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[object] = []
    original = EpsImagePlugin.EpsImageFile._open

    def spy(self: EpsImagePlugin.EpsImageFile) -> None:
        opened.append(self)
        original(self)

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", spy)
    assert Image.open(io.BytesIO(EPS)).format == "EPS"  # the spy sees Pillow's own sniffing
    opened.clear()
    for call in (images.probe, images.decode):
        with pytest.raises(InputError):
            call(EPS)
    assert opened == []


def test_byte_cap_is_checked_first() -> None:
    data = _encode(Image.new("RGB", (64, 64)), "PNG")
    with pytest.raises(InputError, match="too large"):
        images.decode(data, max_bytes=len(data) - 1)
    assert images.decode(data, max_bytes=len(data)).size == (64, 64)


def test_pixel_cap_names_the_dimensions() -> None:
    data = _encode(Image.new("RGB", (300, 200)), "PNG")
    with pytest.raises(InputError, match=r"300×200 pixels; the limit is 0\.05 megapixels"):
        images.decode(data, max_pixels=50_000)


def test_pillow_bomb_warning_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    data = _encode(Image.new("RGB", (64, 64)), "PNG")  # 4096 px: Pillow warns, our cap allows
    with pytest.raises(InputError, match="too large"):
        images.decode(data)


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (96, 48), (220, 20, 20))
    img.paste((20, 20, 220), (48, 0, 96, 48))  # left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display turned 90° clockwise
    decoded = images.decode(_encode(img, "JPEG", quality=95, exif=exif.tobytes()))
    assert decoded.size == (48, 96)
    top = ImageStat.Stat(decoded.crop((0, 0, 48, 40))).mean
    bottom = ImageStat.Stat(decoded.crop((0, 56, 48, 96))).mean
    assert top[0] > 180 > top[2]  # the left (red) half is now on top
    assert bottom[2] > 180 > bottom[0]


def test_alpha_is_composited_over_white() -> None:
    img = Image.new("RGBA", (64, 32), (255, 0, 0, 0))  # left: invisible red
    img.paste((0, 0, 0, 128), (32, 0, 64, 32))  # right: half-transparent black
    decoded = images.decode(_encode(img, "PNG"))
    assert decoded.mode == "RGB"
    assert decoded.getpixel((5, 5)) == (255, 255, 255)
    assert all(abs(c - 127) <= 1 for c in decoded.getpixel((50, 5)))


def test_palette_transparency_becomes_white() -> None:
    img = Image.new("P", (32, 32), 1)
    img.putpalette([0, 0, 0, 10, 200, 10] + [0] * 762)
    img.paste(0, (0, 0, 16, 32))
    decoded = images.decode(_encode(img, "GIF", transparency=0))
    assert decoded.getpixel((4, 4)) == (255, 255, 255)
    assert decoded.getpixel((24, 4)) == (10, 200, 10)


def test_multi_picture_jpeg_gives_its_first_picture() -> None:
    photo, depth = Image.new("RGB", (64, 48), (250, 0, 0)), Image.new("RGB", (64, 48), (0, 250, 0))
    data = _encode(photo, "MPO", save_all=True, append_images=[depth])
    assert images.probe(data) == images.ImageInfo("JPEG", 64, 48)
    red, green, _ = images.decode(data).getpixel((32, 24))
    assert red > 200 and green < 50


def test_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (32, 32), c) for c in ((250, 0, 0), (0, 250, 0), (0, 0, 250))]
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    red, green, blue = images.decode(data).getpixel((16, 16))
    assert red > 200 and green < 50 and blue < 50


@pytest.mark.parametrize(
    ("mode", "fmt", "value"),
    [
        ("L", "PNG", 128),
        ("LA", "PNG", (128, 255)),
        ("1", "PNG", 1),
        ("I;16", "PNG", 40_000),
        ("CMYK", "JPEG", (0, 0, 0, 0)),
        ("P", "PNG", 3),
        ("RGB", "WEBP", (10, 120, 240)),
    ],
)
def test_every_mode_becomes_rgb(mode: str, fmt: str, value: object) -> None:
    decoded = images.decode(_encode(Image.new(mode, (32, 24), value), fmt))  # type: ignore[arg-type]
    assert decoded.mode == "RGB"
    assert decoded.size == (32, 24)


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    decoded = images.decode(_encode(Image.new("I;16", (32, 32), 32_768), "PNG"))
    assert decoded.getpixel((0, 0)) == (128, 128, 128)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_encode_strips_metadata(fmt: str) -> None:
    source = Image.open(io.BytesIO(_encode_with_metadata()))
    source.load()
    assert source.getexif() and "icc_profile" in source.info  # the input really carries some
    again = Image.open(io.BytesIO(images.encode(source, fmt)))
    assert again.format == fmt
    assert not again.getexif()
    assert "exif" not in again.info and "icc_profile" not in again.info
    assert not {k for k in again.info if isinstance(again.info[k], str)}  # no text chunks


def _encode_with_metadata() -> bytes:
    from PIL import ImageCms

    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"
    exif[0x8825] = {1: "N"}  # a GPS block
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    img = Image.new("RGB", (32, 32), (90, 90, 200))
    return _encode(img, "JPEG", exif=exif.tobytes(), icc_profile=icc)


def test_encode_refuses_unknown_formats() -> None:
    with pytest.raises(ValueError, match="BMP"):
        images.encode(Image.new("RGB", (16, 16)), "BMP")


def test_read_file(tmp_path: Path) -> None:
    assert images.read_file(SAMPLES / "rocket.jpg")[:2] == b"\xff\xd8"
    with pytest.raises(InputError, match="No such file"):
        images.read_file(tmp_path / "missing.png")
    with pytest.raises(InputError, match="folder"):
        images.read_file(tmp_path)
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * 2048)
    with pytest.raises(InputError, match="too large"):
        images.read_file(big, max_bytes=1024)


def test_fit_long_side_keeps_the_aspect_ratio() -> None:
    img = images.decode((SAMPLES / "chelsea.png").read_bytes())
    assert images.fit_long_side(img, 128).size == (128, 85)
    assert images.fit_long_side(img.rotate(90, expand=True), 128).size == (85, 128)
    assert images.fit_long_side(img, 902).size == (902, 600)


def test_tensor_round_trip() -> None:
    import torch

    img = images.decode((SAMPLES / "rocket.jpg").read_bytes()).resize((40, 30))
    t = images.to_tensor(img)
    assert t.shape == (1, 3, 30, 40) and t.dtype == torch.float32
    assert t.min().item() >= 0.0 and t.max().item() <= 1.0
    r, g, b = img.getpixel((7, 3))
    assert torch.allclose(t[0, :, 3, 7], torch.tensor([r, g, b]) / 255.0)
    assert images.from_tensor(t).tobytes() == img.tobytes()
    assert images.from_tensor(torch.full((3, 4, 4), 2.0)).getpixel((0, 0)) == (255, 255, 255)
    assert images.from_tensor(torch.full((3, 4, 4), -1.0)).getpixel((0, 0)) == (0, 0, 0)


def test_colour_key_transparency_becomes_white() -> None:
    img = Image.new("RGB", (32, 32), (0, 255, 0))
    img.paste((200, 10, 10), (16, 0, 32, 32))
    decoded = images.decode(_encode(img, "PNG", transparency=(0, 255, 0)))
    assert decoded.getpixel((4, 4)) == (255, 255, 255)
    assert decoded.getpixel((24, 4)) == (200, 10, 10)


def test_importing_the_image_modules_does_not_load_torch() -> None:
    code = (
        "import sys, nst_engine.images, nst_engine.styles, nst_engine.gallery, nst_engine.cli; "
        "sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_concurrent_probes_leave_the_warning_machinery_as_it_was() -> None:
    filters, show = list(warnings.filters), warnings.showwarning
    bomb, fine = _png_claiming(12_000, 12_000), _encode(Image.new("RGB", (64, 64)), "PNG")

    def probe_both(_: int) -> tuple[str, int]:
        with pytest.raises(InputError, match="12000×12000"):
            images.probe(bomb)
        return images.probe(fine).format, images.probe(fine).width

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, to give any race a chance to show
    try:
        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(probe_both, range(400))) == {("PNG", 64)}
    finally:
        sys.setswitchinterval(interval)
    assert warnings.filters == filters and warnings.showwarning is show
