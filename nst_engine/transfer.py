"""The optimisation: paint the content photo in the requested styles, coarse to fine.

At each scale of the preset's schedule the image is optimised with L-BFGS (fp32, one objective
evaluation per step) against content and style targets computed once for that scale; the next
scale starts from the bicubic upsample of the previous result. The image lives in the Caffe
input space of the VGG weights throughout and is clamped to 0..1 only on output.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image

from . import images, styles
from .api import Cancelled, EngineError, Progress, Result, StyleRequest, StyleSource
from .color import luminance, match_luminance, with_chroma_of
from .losses import Targets, make_targets, objective, style_grams
from .schedule import MIN_SIDE, Scale, plan
from .targets import TargetCache, default_cache
from .vgg import VGGFeatures, deprocess, load_model, pick_device, preprocess

log = logging.getLogger(__name__)

PREVIEW_SIDE = 256
PREVIEW_QUALITY = 80
# Seeded noise added to the first scale's starting image, on the 0..1 scale.
INIT_NOISE = 0.02
LBFGS_HISTORY = 20
OUT_OF_MEMORY = "Ran out of memory painting this image; try a smaller size."

TargetsFn = Callable[[dict[str, torch.Tensor], list[dict[str, torch.Tensor]], list[float]], Targets]


@dataclass
class StyleImage:
    """A decoded style image and its blend weight."""

    image: Image.Image
    weight: float
    builtin: str | None  # the key of its cached targets: a built-in's name or the source's key


@dataclass
class _Tracker:
    """Counts steps and time for progress events and the ETA."""

    scales: list[Scale]
    started: float
    step: int = 0
    work_done: float = 0.0
    last_preview: float = 0.0

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.scales)

    def eta(self, scale_index: int, steps_left_here: int) -> float | None:
        elapsed = time.monotonic() - self.started
        if self.work_done <= 0:
            return None
        remaining = steps_left_here * _work(self.scales[scale_index]) + sum(
            s.steps * _work(s) for s in self.scales[scale_index + 1 :]
        )
        return elapsed / self.work_done * remaining


def _work(scale: Scale) -> float:
    return float(scale.width * scale.height)


def _load_style(source: StyleSource) -> StyleImage:
    if source.name is not None:
        name = styles.get(source.name).name  # canonical, or InputError with a suggestion
        return StyleImage(styles.image(name), source.weight, name)
    assert source.image is not None
    return StyleImage(images.decode(source.image), source.weight, source.key)


def _resize(img: Image.Image, width: int, height: int) -> Image.Image:
    if img.size == (width, height):
        return img
    return img.resize((width, height), Image.Resampling.LANCZOS)


def style_dims(img: Image.Image, scale: Scale) -> tuple[int, int]:
    """The style's size at this scale: its own aspect, the same area as the content.

    Each side is at least the schedule's MIN_SIDE, so that relu5_1 is never empty.
    """
    w, h = img.size
    factor = (scale.width * scale.height / (w * h)) ** 0.5
    return max(MIN_SIDE, round(w * factor)), max(MIN_SIDE, round(h * factor))


def _style_grams(
    model: VGGFeatures,
    style: StyleImage,
    scale: Scale,
    content_grey: torch.Tensor | None,
    cache: TargetCache,
) -> dict[str, torch.Tensor]:
    width, height = style_dims(style.image, scale)
    cacheable = style.builtin is not None and content_grey is None
    if cacheable:
        cached = cache.get(style.builtin, width, height, model.device)
        if cached is not None:
            return cached
    rgb = images.to_tensor(_resize(style.image, width, height)).to(model.device)
    if content_grey is not None:
        rgb = match_luminance(luminance(rgb), content_grey)
    with torch.no_grad():
        grams = style_grams(model(preprocess(rgb)))
    if cacheable:
        cache.put(style.builtin, width, height, grams)
    return grams


def to_image(x: torch.Tensor, colour: torch.Tensor | None) -> Image.Image:
    """The Caffe-space image as RGB; with `colour` (same size), its luminance on that chroma."""
    rgb = deprocess(x.detach()).clamp(0.0, 1.0)
    if colour is not None:
        rgb = with_chroma_of(rgb, colour)
    return images.from_tensor(rgb.float().cpu())


def _preview(img: Image.Image) -> bytes:
    return images.encode(images.fit_long_side(img, PREVIEW_SIDE), "JPEG", quality=PREVIEW_QUALITY)


def stylize(
    request: StyleRequest,
    *,
    device: str | torch.device | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    preview_interval: float | None = None,
    on_snapshot: Callable[[int, Image.Image], None] | None = None,
    snapshot_every: int | None = None,
) -> Result:
    """Run one style transfer; raises InputError, Cancelled or EngineError (see nst_engine.api)."""
    started = time.monotonic()
    dev = pick_device(device)
    content = images.decode(request.content)
    style_list = [_load_style(s) for s in request.styles]
    scales = plan(*content.size, request.size, request.quality, request.iterations)
    model = load_model(dev)
    try:
        x, losses, colour = paint(
            model,
            content,
            style_list,
            scales,
            functools.partial(make_targets, strength=request.strength),
            preserve_colors=request.preserve_colors,
            seed=request.seed,
            on_progress=on_progress,
            should_stop=should_stop,
            preview_interval=preview_interval,
            on_snapshot=on_snapshot,
            snapshot_every=snapshot_every,
            started=started,
        )
    except torch.OutOfMemoryError as exc:
        raise EngineError(OUT_OF_MEMORY) from exc
    except RuntimeError as exc:  # the CPU allocator's failure is a plain RuntimeError
        if "can't allocate memory" in str(exc):
            raise EngineError(OUT_OF_MEMORY) from exc
        raise
    out = to_image(x, colour)
    seconds = time.monotonic() - started
    log.info("stylized %dx%d in %.1fs on %s", out.width, out.height, seconds, dev)
    return Result(
        image=images.encode(out, "PNG"),
        width=out.width,
        height=out.height,
        seconds=seconds,
        iterations=sum(s.steps for s in scales),
        device=str(dev),
        losses=losses,
        inputs=_input_copies(content, style_list, out.size) if request.input_copies else (),
    )


def _input_copies(
    content: Image.Image, style_list: Sequence[StyleImage], size: tuple[int, int]
) -> tuple[bytes, ...]:
    """The photo and every style image (not built-ins or keyed ones) as PNGs at the long side."""
    long_side = max(size)
    pictures = [content] + [s.image for s in style_list if s.builtin is None]
    return tuple(images.encode(images.fit_long_side(p, long_side), "PNG") for p in pictures)


def paint(
    model: VGGFeatures,
    content: Image.Image,
    style_list: Sequence[StyleImage],
    scales: Sequence[Scale],
    targets_fn: TargetsFn,
    *,
    preserve_colors: bool = False,
    seed: int = 0,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    preview_interval: float | None = None,
    on_snapshot: Callable[[int, Image.Image], None] | None = None,
    snapshot_every: int | None = None,
    started: float | None = None,
    cache: TargetCache | None = None,
) -> tuple[torch.Tensor, dict[str, float], torch.Tensor | None]:
    """The coarse-to-fine optimisation loop.

    Returns the final image in Caffe space, the last loss parts, and (keep-colours only) the
    content's RGB whose chroma the output takes.
    """
    cache = cache or default_cache()
    device = model.device
    tracker = _Tracker(list(scales), started if started is not None else time.monotonic())
    tracker.last_preview = tracker.started
    generator = torch.Generator().manual_seed(seed)
    weights = [s.weight for s in style_list]
    x: torch.Tensor | None = None
    colour: torch.Tensor | None = None
    parts: dict[str, float] = {}

    for index, scale in enumerate(scales):
        rgb = images.to_tensor(_resize(content, scale.width, scale.height)).to(device)
        grey = None
        if preserve_colors:
            colour = rgb
            grey = luminance(rgb)
            rgb = grey
        start = preprocess(rgb)
        with torch.no_grad():
            content_features = model(start)
        grams = [_style_grams(model, s, scale, grey, cache) for s in style_list]
        targets = targets_fn(content_features, grams, weights)
        del content_features

        if x is None:
            noise = torch.randn(start.shape, generator=generator) * (INIT_NOISE * 255.0)
            x = start + noise.to(device)
        else:
            x = F.interpolate(
                x, size=(scale.height, scale.width), mode="bicubic", align_corners=False
            )
        # L-BFGS needs a contiguous parameter: hold the pixels as N×H×W×C, whose N×C×H×W view
        # is already channels_last for the convolutions (the view is taken afresh per call, as
        # the optimiser updates the pixels in place).
        pixels = x.detach().permute(0, 2, 3, 1).contiguous().requires_grad_(True)
        optimiser = torch.optim.LBFGS(
            [pixels], lr=1.0, max_iter=1, history_size=LBFGS_HISTORY,
            tolerance_grad=0.0, tolerance_change=0.0,
        )  # fmt: skip

        def closure(pixels: torch.Tensor = pixels, targets: Targets = targets) -> torch.Tensor:
            pixels.grad = None
            image = pixels.permute(0, 3, 1, 2)
            loss, loss_parts = objective(model(image), image / 255.0, targets)
            # L-BFGS minimises loss × pixel count: the normalised losses are means, and their
            # per-pixel gradients (≈1e-7) are so small that its curvature pairs would fall under
            # its fixed 1e-10 cut-off.
            (loss * image.numel()).backward()
            parts.clear()
            parts.update({k: v.item() for k, v in loss_parts.items()})
            parts["total"] = loss.item()
            return loss

        for local_step in range(scale.steps):
            if should_stop is not None and should_stop():
                raise Cancelled()
            optimiser.step(closure)
            tracker.step += 1
            tracker.work_done += _work(scale)
            if not all(v == v for v in parts.values()):  # NaN: the optimisation blew up
                raise EngineError("The optimisation diverged; try a lower strength.")
            last_here = local_step == scale.steps - 1
            snapshot = (
                on_snapshot is not None and snapshot_every and tracker.step % snapshot_every == 0
            )
            now = time.monotonic()
            want_preview = on_progress is not None and (
                last_here
                or (preview_interval is not None and now - tracker.last_preview >= preview_interval)
            )
            x = pixels.detach().permute(0, 3, 1, 2)
            image = to_image(x, colour) if (snapshot or want_preview) else None
            if snapshot and image is not None and on_snapshot is not None:
                on_snapshot(tracker.step, image)
            preview = None
            if want_preview and image is not None:
                preview = _preview(image)
                tracker.last_preview = now
            if on_progress is not None:
                on_progress(
                    Progress(
                        scale=index + 1,
                        scales=len(scales),
                        step=tracker.step,
                        total_steps=tracker.total_steps,
                        elapsed=now - tracker.started,
                        eta=tracker.eta(index, scale.steps - local_step - 1),
                        losses=dict(parts),
                        preview=preview,
                    )
                )
    assert x is not None
    return x.detach(), parts, colour
