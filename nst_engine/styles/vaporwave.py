"""The vaporwave style picture, painted from code so that its source is this project.

A pastel sunset sky (pink at the horizon through purple to teal), a big sun with horizontal
stripes cut out of its lower half, wireframe mountains, a neon magenta and cyan grid floor
running to a vanishing point, and scan lines. Pure Pillow, no randomness: the same size always
gives the same pixels.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from PIL import Image, ImageChops, ImageDraw, ImageFilter

Color = tuple[int, int, int]

SKY: Sequence[tuple[float, Color]] = (
    (0.00, (64, 201, 214)),  # teal
    (0.40, (142, 108, 222)),  # lavender purple
    (0.78, (255, 113, 206)),  # hot pink
    (1.00, (255, 178, 167)),  # peach at the horizon
)
SUN: Sequence[tuple[float, Color]] = (
    (0.00, (255, 241, 118)),  # yellow
    (0.55, (255, 143, 94)),  # orange
    (1.00, (255, 52, 145)),  # magenta
)
FLOOR: Sequence[tuple[float, Color]] = (
    (0.00, (58, 12, 92)),
    (1.00, (14, 2, 36)),
)
MOUNTAIN = (44, 10, 78)
MAGENTA = (255, 46, 214)
CYAN = (0, 238, 255)
HORIZON = 0.62  # fraction of the height where sky meets floor


def _lerp(a: Color, b: Color, t: float) -> Color:
    return (
        round(a[0] + (b[0] - a[0]) * t),
        round(a[1] + (b[1] - a[1]) * t),
        round(a[2] + (b[2] - a[2]) * t),
    )


def _ramp(stops: Sequence[tuple[float, Color]], t: float) -> Color:
    for (t0, c0), (t1, c1) in itertools.pairwise(stops):
        if t <= t1:
            return _lerp(c0, c1, (t - t0) / (t1 - t0))
    return stops[-1][1]


def _vertical_gradient(size: tuple[int, int], stops: Sequence[tuple[float, Color]]) -> Image.Image:
    width, height = size
    column = Image.new("RGB", (1, height))
    column.putdata([_ramp(stops, y / max(1, height - 1)) for y in range(height)])
    return column.resize((width, height), Image.Resampling.NEAREST)


def _sun(canvas: Image.Image, horizon: int) -> None:
    width, height = canvas.size
    radius = round(min(width, height) * 0.30)
    cx, cy = width // 2, horizon - round(radius * 0.45)
    box = (cx - radius, cy - radius, cx + radius, cy + radius)

    disc = Image.new("L", canvas.size, 0)
    ImageDraw.Draw(disc).ellipse(box, fill=255)
    ImageDraw.Draw(disc).rectangle((0, horizon, width, height), fill=0)
    mask = disc.copy()
    draw = ImageDraw.Draw(mask)
    # Stripes cut out of the lower half, thicker and closer together towards the horizon.
    start = cy - radius * 0.2
    stripes = 6
    pitch = (horizon - start) / stripes
    for i in range(stripes):
        top = start + i * pitch
        thick = max(1.0, pitch * (0.15 + 0.5 * i / stripes))
        draw.rectangle((0, round(top + pitch - thick), width, round(top + pitch)), fill=0)

    sky = canvas.copy()
    glow = mask.filter(ImageFilter.GaussianBlur(radius * 0.35)).point(lambda v: v * 0.55)
    canvas.paste(Image.new("RGB", canvas.size, (255, 160, 200)), (0, 0), glow)
    # The cut-outs show the bare sky, not the glow.
    canvas.paste(sky, (0, 0), ImageChops.subtract(disc, mask))
    fill = Image.new("RGB", canvas.size)
    fill.paste(_vertical_gradient((2 * radius + 1, 2 * radius + 1), SUN), (box[0], box[1]))
    canvas.paste(fill, (0, 0), mask)


def _mountains(canvas: Image.Image, horizon: int) -> None:
    width = canvas.width
    # Peaks as (x fraction, height fraction of the sky); mirrored on both sides of the sun.
    peaks = ((0.0, 0.10), (0.06, 0.22), (0.13, 0.12), (0.21, 0.30), (0.29, 0.15), (0.36, 0.05))
    draw = ImageDraw.Draw(canvas)
    line = max(1, width // 400)
    for side in (1, -1):
        points = [(width / 2 + side * (0.5 - x) * width, horizon - h * horizon) for x, h in peaks]
        draw.polygon([*points, (points[-1][0], horizon), (points[0][0], horizon)], fill=MOUNTAIN)
        draw.line(points, fill=MAGENTA, width=line)
        for px, py in points[1:-1]:
            draw.line([(px, py), (px + side * width * 0.02, horizon)], fill=MAGENTA, width=line)


def _grid(size: tuple[int, int], horizon: int) -> Image.Image:
    """Neon grid lines (on black) for the floor, to be added onto the picture."""
    width, height = size
    layer = Image.new("RGB", size)
    draw = ImageDraw.Draw(layer)
    line = max(1, width // 320)
    vx, depth = width / 2, height - horizon
    # Rails fan out from the vanishing point; their ends run past the image's lower corners.
    rails = 12
    for i in range(-rails, rails + 1):
        x_end = vx + i * width / rails * 1.25
        draw.line([(vx, horizon), (x_end, height)], fill=MAGENTA, width=line)
    # Cross lines at equal steps in depth: y - horizon is proportional to 1 / distance. Stop
    # where they would crowd into a solid band.
    previous = float(height)
    for k in range(1, 200):
        y = horizon + depth * 1.6 / (k * 0.55 + 0.6)
        if y >= height:
            continue
        if previous - y < 2 * line + 3:
            break
        draw.line([(0, y), (width, y)], fill=CYAN, width=line)
        previous = y
    # Distance haze: the grid fades towards the horizon.
    haze = ((0.0, (40, 40, 40)), (0.35, (180, 180, 180)), (1.0, (255, 255, 255)))
    fade = Image.new("RGB", size)
    fade.paste(_vertical_gradient((width, depth), haze), (0, horizon))
    layer = ImageChops.multiply(layer, fade)
    ImageDraw.Draw(layer).line([(0, horizon), (width, horizon)], fill=MAGENTA, width=line + 1)
    glow = layer.filter(ImageFilter.GaussianBlur(max(2, width // 160)))
    return ImageChops.add(layer, ImageChops.add(glow, glow))


def _scan_lines(canvas: Image.Image) -> Image.Image:
    width, height = canvas.size
    period = max(3, height // 160)
    shade = Image.new("L", (1, height))
    shade.putdata([205 if y % period == 0 else 255 for y in range(height)])
    shade_rgb = shade.resize((width, height), Image.Resampling.NEAREST).convert("RGB")
    return ImageChops.multiply(canvas, shade_rgb)


def render(width: int = 1024, height: int = 640) -> Image.Image:
    """Paint the vaporwave picture at the given size (deterministic)."""
    if width < 16 or height < 16:
        raise ValueError("the vaporwave picture needs at least 16×16 pixels")
    horizon = round(height * HORIZON)
    canvas = _vertical_gradient((width, horizon), SKY)
    canvas = canvas.crop((0, 0, width, height))
    canvas.paste(_vertical_gradient((width, height - horizon), FLOOR), (0, horizon))
    _sun(canvas, horizon)
    _mountains(canvas, horizon)
    canvas = ImageChops.add(canvas, _grid((width, height), horizon))
    return _scan_lines(canvas)
