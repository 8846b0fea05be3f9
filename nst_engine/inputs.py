"""A request's inputs made ready to paint: the photo, style and start images decoded, the scales
planned for them, and the copies of the inputs a Result can carry back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from . import images, styles
from .api import StyleRequest, StyleSource
from .schedule import Scale, finer_than, plan


@dataclass
class StyleImage:
    """A decoded style image and its blend weight."""

    image: Image.Image
    weight: float
    builtin: str | None  # the key of its cached targets: a built-in's name or the source's key


def load_style(source: StyleSource) -> StyleImage:
    if source.name is not None:
        name = styles.get(source.name).name  # canonical, or InputError with a suggestion
        return StyleImage(styles.image(name), source.weight, name)
    assert source.image is not None
    return StyleImage(images.decode(source.image), source.weight, source.key)


@dataclass
class Prepared:
    """A request decoded and planned, before it paints."""

    request: StyleRequest
    content: Image.Image
    styles: list[StyleImage]
    scales: list[Scale]
    init: Image.Image | None


def prepare(request: StyleRequest) -> Prepared:
    content = images.decode(request.content)
    style_list = [load_style(s) for s in request.styles]
    scales = plan(*content.size, request.size, request.quality, request.iterations)
    init = None
    if request.init is not None:
        init = images.decode(request.init)
        scales = finer_than(scales, max(init.size))
    return Prepared(request, content, style_list, scales, init)


def input_copies(
    content: Image.Image, style_list: Sequence[StyleImage], size: tuple[int, int]
) -> tuple[bytes, ...]:
    """The photo and every style image (not built-ins or keyed ones) as PNGs at the long side."""
    long_side = max(size)
    pictures = [content] + [s.image for s in style_list if s.builtin is None]
    return tuple(images.encode(images.fit_long_side(p, long_side), "PNG") for p in pictures)
