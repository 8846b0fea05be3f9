"""images.py: hostile input is refused with one readable line; good input comes out as RGB."""

from __future__ import annotations

import io
import itertools
import logging
import os
import struct
import subprocess
import sys
import warnings
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import EpsImagePlugin, Image, ImageChops, ImageStat

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


def test_read_file_names_the_file_with_its_label(tmp_path: Path) -> None:
    missing = tmp_path / "missing.png"
    with pytest.raises(InputError, match=f"^style file {missing}: No such file"):
        images.read_file(missing, label="style file")


@pytest.mark.parametrize("kind", ["device", "fifo", "folder"])
def test_read_file_refuses_what_is_not_a_regular_file(kind: str, tmp_path: Path) -> None:
    target = {"device": Path("/dev/zero"), "fifo": tmp_path / "p", "folder": tmp_path / "d"}[kind]
    if kind == "fifo":
        os.mkfifo(target)  # no writer: a blocking open or read would never return
    elif kind == "folder":
        target.mkdir()
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(images.read_file, target, label="photo")
        with pytest.raises(InputError, match=f"^photo {target}: It is (a folder|not a regular)"):
            future.result(timeout=10)


def test_read_file_caps_what_it_reads_not_what_the_file_claims() -> None:
    """/proc files are regular files that say they are empty; the cap still holds."""
    maps = Path("/proc/self/maps")
    assert maps.stat().st_size == 0 and len(maps.read_bytes()) > 64
    with pytest.raises(InputError, match="too large"):
        images.read_file(maps, max_bytes=64)
    assert images.read_file(maps, max_bytes=1024 * 1024).startswith(maps.read_bytes()[:8])


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


# Colour: real ICC v2 profiles, built here from first principles (Pillow can only create sRGB,
# Lab and XYZ ones), and the expected colours computed here with plain colour-science formulas.

D50 = (0.9642, 1.0, 0.8249)
D65_XY = (0.3127, 0.3290)
P3_PRIMARIES = ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060))
SRGB_PRIMARIES = ((0.640, 0.330), (0.300, 0.600), (0.150, 0.060))
BRADFORD = ((0.8951, 0.2664, -0.1614), (-0.7502, 1.7135, 0.0367), (0.0389, -0.0685, 1.0296))
Matrix = list[list[float]]


def _solve(m: Matrix, v: Sequence[float]) -> list[float]:
    """m @ s = v for a 3×3 m, by Cramer's rule."""

    def det(a: Matrix) -> float:
        return (
            a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1])
            - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
            + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0])
        )

    out = []
    for i in range(3):
        mi = [list(row) for row in m]
        for r in range(3):
            mi[r][i] = v[r]
        out.append(det(mi) / det(m))
    return out


def _matmul(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> Matrix:
    return [[sum(a[i][k] * b[k][j] for k in range(3)) for j in range(3)] for i in range(3)]


def _apply(m: Sequence[Sequence[float]], v: Sequence[float]) -> list[float]:
    return [sum(m[i][k] * v[k] for k in range(3)) for i in range(3)]


def _invert(m: Matrix) -> Matrix:
    cols = [_solve(m, e) for e in ((1, 0, 0), (0, 1, 0), (0, 0, 1))]
    return [[cols[j][i] for j in range(3)] for i in range(3)]


def _xyz(xy: tuple[float, float]) -> tuple[float, float, float]:
    x, y = xy
    return (x / y, 1.0, (1 - x - y) / y)


def _rgb_to_xyz(primaries: Sequence[tuple[float, float]]) -> Matrix:
    """The linear RGB → XYZ (D65) matrix of a colour space with these primaries."""
    m = [[_xyz(p)[i] for p in primaries] for i in range(3)]
    scale = _solve(m, _xyz(D65_XY))
    return [[m[i][j] * scale[j] for j in range(3)] for i in range(3)]


def _to_d50(m: Matrix) -> Matrix:
    """m followed by Bradford adaptation from D65 to D50 (the ICC connection space's white)."""
    src, dst = _apply(BRADFORD, _xyz(D65_XY)), _apply(BRADFORD, D50)
    scale = [[dst[i] / src[i] if i == j else 0.0 for j in range(3)] for i in range(3)]
    bradford = [list(row) for row in BRADFORD]
    return _matmul(_matmul(_invert(bradford), _matmul(scale, bradford)), m)


def _linear(v: int) -> float:
    c = v / 255
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def _encoded(c: float) -> int:
    c = min(max(c, 0.0), 1.0)
    return round(255 * (12.92 * c if c <= 0.0031308 else 1.055 * c ** (1 / 2.4) - 0.055))


def _lab(linear_srgb: Sequence[float]) -> tuple[float, float, float]:
    def f(t: float) -> float:
        return t ** (1 / 3) if t > (6 / 29) ** 3 else t / (3 * (6 / 29) ** 2) + 4 / 29

    xyz = _apply(_to_d50(_rgb_to_xyz(SRGB_PRIMARIES)), linear_srgb)
    fx, fy, fz = (f(v / w) for v, w in zip(xyz, D50, strict=True))
    return (116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz))


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def _icc(cls: bytes, space: bytes, pcs: bytes, tags: dict[bytes, bytes]) -> bytes:
    """An ICC v2 profile: 128-byte header, tag table, tags (each padded to 4 bytes)."""
    ascii_ = b"stylebot test profile\0"
    tags = {
        b"desc": b"desc\0\0\0\0" + struct.pack(">I", len(ascii_)) + ascii_ + bytes(8 + 3 + 67),
        b"cprt": b"text\0\0\0\0No copyright, test data\0",
        b"wtpt": b"XYZ \0\0\0\0" + b"".join(map(_s15, D50)),
        **tags,
    }
    start = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for sig, data in tags.items():
        table += sig + struct.pack(">II", start + len(body), len(data))
        body += data + bytes(-len(data) % 4)
    header = (
        struct.pack(">I", start + len(body)) + bytes(4) + bytes([2, 0x10, 0, 0])
        + cls + space + pcs + struct.pack(">6H", 2026, 1, 1, 0, 0, 0) + b"acsp"
        + bytes(4 + 4 + 8 + 8 + 4) + b"".join(map(_s15, D50)) + bytes(4 + 16 + 28)
    )  # fmt: skip
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


def _matrix_profile(primaries: Sequence[tuple[float, float]]) -> bytes:
    """A display profile: these primaries, D65 white, the sRGB curve (as Display P3 has)."""
    colorants = _to_d50(_rgb_to_xyz(primaries))
    g, a, b, c, d = 2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045
    curve = b"para\0\0\0\0" + struct.pack(">HH", 3, 0) + b"".join(map(_s15, (g, a, b, c, d)))
    tags = {b"rTRC": curve, b"gTRC": curve, b"bTRC": curve}
    for sig, column in zip((b"rXYZ", b"gXYZ", b"bXYZ"), range(3), strict=True):
        tags[sig] = b"XYZ \0\0\0\0" + b"".join(_s15(colorants[i][column]) for i in range(3))
    return _icc(b"mntr", b"RGB ", b"XYZ ", tags)


# A printer's inks, as the linear sRGB light each one lets through, on a paper.
PAPER = (0.85, 0.85, 0.80)
INKS = ((0.03, 0.35, 0.80), (0.70, 0.08, 0.35), (0.90, 0.80, 0.06), (0.03, 0.03, 0.03))


def _printed(cmyk: Sequence[int]) -> list[float]:
    """The linear sRGB colour of full (255) or no (0) coverage of each ink."""
    light = list(PAPER)
    for amount, ink in zip(cmyk, INKS, strict=True):
        if amount:
            light = [v * t for v, t in zip(light, ink, strict=True)]
    return light


def _cmyk_profile() -> bytes:
    """A printer profile for those inks: an A2B0 lut16 with 2 grid points per ink, to Lab."""
    grid = []
    for corner in itertools.product((0, 255), repeat=4):  # C varies slowest, as ICC orders it
        lab_l, lab_a, lab_b = _lab(_printed(corner))
        grid += [round(lab_l * 652.8), round((lab_a + 128) * 256), round((lab_b + 128) * 256)]
    ramp = struct.pack(">2H", 0, 65535)
    identity = b"".join(map(_s15, (1, 0, 0, 0, 1, 0, 0, 0, 1)))
    lut = (
        b"mft2\0\0\0\0" + bytes([4, 3, 2, 0]) + identity + struct.pack(">2H", 2, 2)
        + ramp * 4 + struct.pack(f">{len(grid)}H", *grid) + ramp * 3
    )  # fmt: skip
    return _icc(b"prtr", b"CMYK", b"Lab ", {b"A2B0": lut})


def _saturation(rgb: Sequence[int]) -> int:
    return max(rgb) - min(rgb)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_display_p3_is_converted_to_srgb(fmt: str) -> None:
    p3_to_srgb = _matmul(_invert(_rgb_to_xyz(SRGB_PRIMARIES)), _rgb_to_xyz(P3_PRIMARIES))
    patches = [(200, 60, 50), (60, 180, 90), (70, 90, 210), (128, 128, 128)]
    img = Image.new("RGB", (32 * len(patches), 32))
    for i, colour in enumerate(patches):
        img.paste(colour, (32 * i, 0, 32 * i + 32, 32))
    params = {"quality": 100, "subsampling": 0} if fmt == "JPEG" else {"lossless": True}
    data = _encode(img, fmt, icc_profile=_matrix_profile(P3_PRIMARIES), **params)
    decoded = images.decode(data)
    assert decoded.mode == "RGB" and not decoded.info
    for i, colour in enumerate(patches):
        got = decoded.getpixel((32 * i + 16, 16))
        expected = [_encoded(v) for v in _apply(p3_to_srgb, [_linear(c) for c in colour])]
        assert max(abs(g - e) for g, e in zip(got, expected, strict=True)) <= 2, (colour, got)
        if _saturation(colour):  # the same numbers mean a more saturated colour in P3
            assert _saturation(got) > _saturation(colour) + 10
    assert "icc_profile" not in Image.open(io.BytesIO(images.encode(decoded))).info


def test_an_srgb_tagged_image_is_unchanged() -> None:
    from PIL import ImageCms

    ramp = Image.new("RGB", (256, 24))
    ramp.putdata([(x, (x * 7) % 256, 255 - x) for _ in range(24) for x in range(256)])
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for profile in (srgb, _matrix_profile(SRGB_PRIMARIES)):
        decoded = images.decode(_encode(ramp, "PNG", icc_profile=profile))
        diff = ImageChops.difference(decoded, ramp).getextrema()
        assert max(high for _, high in diff) <= 1


def test_cmyk_goes_through_its_embedded_profile() -> None:
    corners = [(255, 0, 0, 0), (255, 255, 0, 0), (0, 255, 255, 0), (0, 0, 0, 255)]
    for cmyk in corners:
        img = Image.new("CMYK", (32, 32), cmyk)
        data = _encode(img, "JPEG", quality=100, icc_profile=_cmyk_profile())
        got = images.decode(data).getpixel((16, 16))
        expected = [_encoded(v) for v in _printed(cmyk)]
        assert max(abs(g - e) for g, e in zip(got, expected, strict=True)) <= 4, (cmyk, got)
        naive = Image.new("CMYK", (1, 1), cmyk).convert("RGB").getpixel((0, 0))
        assert max(abs(g - n) for g, n in zip(got, naive, strict=True)) > 30
    blank = _encode(Image.new("CMYK", (32, 32)), "JPEG", quality=100, icc_profile=_cmyk_profile())
    assert images.decode(blank).getpixel((16, 16)) == (255, 255, 255)  # no ink: the page white


def test_cmyk_without_a_profile_multiplies_out_the_ink() -> None:
    img = Image.new("CMYK", (32, 32), (128, 0, 64, 51))
    got = images.decode(_encode(img, "JPEG", quality=100)).getpixel((16, 16))
    expected = [round((255 - ink) * (255 - 51) / 255) for ink in (128, 0, 64)]
    assert max(abs(g - e) for g, e in zip(got, expected, strict=True)) <= 2, got


def test_alpha_survives_the_profile_conversion() -> None:
    img = Image.new("RGBA", (32, 32), (200, 60, 50, 255))
    img.paste((0, 0, 255, 0), (16, 0, 32, 32))
    decoded = images.decode(_encode(img, "PNG", icc_profile=_matrix_profile(P3_PRIMARIES)))
    assert decoded.getpixel((24, 8)) == (255, 255, 255)
    assert _saturation(decoded.getpixel((8, 8))) > _saturation((200, 60, 50)) + 10


def _broken_profiles() -> dict[str, bytes]:
    from PIL import ImageCms

    p3 = _matrix_profile(P3_PRIMARIES)
    return {
        "not a profile": b"this is no ICC profile at all",
        "cut short": p3[: len(p3) // 2],
        "a Lab profile on RGB pixels": ImageCms.ImageCmsProfile(
            ImageCms.createProfile("LAB")
        ).tobytes(),
        "a CMYK profile on RGB pixels": _cmyk_profile(),
    }


@pytest.mark.parametrize("name", list(_broken_profiles()))
def test_a_profile_that_cant_be_used_is_ignored_with_a_log_line(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    img = Image.new("RGB", (32, 32), (200, 60, 50))
    with caplog.at_level(logging.WARNING, logger="nst_engine.images"):
        decoded = images.decode(_encode(img, "PNG", icc_profile=_broken_profiles()[name]))
    assert decoded.getpixel((8, 8)) == (200, 60, 50)
    assert any("colour profile" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("mode", ["L", "LA"])
def test_grey_goes_through_its_profile(mode: str) -> None:
    linear = b"curv\0\0\0\0" + struct.pack(">I", 0)  # no entries: the identity, gamma 1
    grey = _icc(b"mntr", b"GRAY", b"XYZ ", {b"kTRC": linear})
    img = Image.new(mode, (32, 32), 100 if mode == "L" else (100, 255))
    got = images.decode(_encode(img, "PNG", icc_profile=grey)).getpixel((8, 8))
    expected = _encoded(100 / 255)  # stored linear light, shown with the sRGB curve
    assert all(abs(v - expected) <= 1 for v in got), got
