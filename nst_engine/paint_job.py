"""PaintJob, one image being painted inside a batch, and what it reports while it paints: step
counts and ETA, progress events with previews, snapshots and timelapse frames."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image

from . import images
from .api import Progress, StyleRequest
from .color import with_chroma_of
from .inputs import StyleImage
from .losses import Targets
from .schedule import Scale
from .vgg import deprocess

PREVIEW_SIDE = 256
PREVIEW_QUALITY = 80

TargetsFn = Callable[[dict[str, torch.Tensor], list[dict[str, torch.Tensor]], list[float]], Targets]


@dataclass
class PaintJob:
    """One image being painted inside a batch: its inputs, callbacks and, at the end, outcome."""

    content: Image.Image
    styles: Sequence[StyleImage]
    targets_fn: TargetsFn
    preserve_colors: bool = False
    seed: int = 0
    on_progress: Callable[[Progress], None] | None = None
    should_stop: Callable[[], bool] | None = None
    on_snapshot: Callable[[int, Image.Image], None] | None = None
    tracker: Tracker | None = None
    parts: dict[str, float] = field(default_factory=dict)
    colour: torch.Tensor | None = None  # keep-colours: the photo whose chroma the output takes
    x: torch.Tensor | None = None  # the final image, Caffe space, 1×3×H×W
    error: Exception | None = None  # Cancelled or EngineError, if it stopped early
    init: Image.Image | None = None  # start from this image rather than the noisy photo
    frames: list[Image.Image] | None = None  # timelapse frames, when one was asked for
    frame_every: int = 1
    request: StyleRequest | None = None


@dataclass
class Tracker:
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
        remaining = steps_left_here * work(self.scales[scale_index]) + sum(
            s.steps * work(s) for s in self.scales[scale_index + 1 :]
        )
        return elapsed / self.work_done * remaining


def work(scale: Scale) -> float:
    return float(scale.width * scale.height)


def to_image(x: torch.Tensor, colour: torch.Tensor | None) -> Image.Image:
    """The Caffe-space image as RGB; with `colour` (same size), its luminance on that chroma."""
    rgb = deprocess(x.detach()).clamp(0.0, 1.0)
    if colour is not None:
        rgb = with_chroma_of(rgb, colour)
    return images.from_tensor(rgb.float().cpu())


def encode_preview(img: Image.Image) -> bytes:
    return images.encode(images.fit_long_side(img, PREVIEW_SIDE), "JPEG", quality=PREVIEW_QUALITY)


def publish(
    job: PaintJob,
    x: torch.Tensor,
    index: int,
    scale: Scale,
    local_step: int,
    preview_interval: float | None,
    snapshot_every: int | None,
) -> None:
    """Count the step for `job` and send its progress, preview and snapshot when due."""
    tracker = job.tracker
    assert tracker is not None
    tracker.step += 1
    tracker.work_done += work(scale)
    last_here = local_step == scale.steps - 1
    snapshot = job.on_snapshot is not None and snapshot_every and tracker.step % snapshot_every == 0
    # a timelapse frame (the result itself is added as the last one at the end)
    frame = (
        job.frames is not None
        and tracker.step % job.frame_every == 0
        and tracker.step < tracker.total_steps
    )
    if job.on_progress is None and not snapshot and not frame:
        return  # nothing to publish: no image conversion either
    now = time.monotonic()
    want_preview = job.on_progress is not None and (
        last_here
        or (preview_interval is not None and now - tracker.last_preview >= preview_interval)
    )
    image = to_image(x, job.colour) if (snapshot or want_preview or frame) else None
    if frame and image is not None and job.frames is not None:
        job.frames.append(image)
    if snapshot and image is not None and job.on_snapshot is not None:
        job.on_snapshot(tracker.step, image)
    preview = None
    if want_preview and image is not None:
        preview = encode_preview(image)
        tracker.last_preview = now
    if job.on_progress is not None:
        job.on_progress(
            Progress(
                scale=index + 1,
                scales=len(tracker.scales),
                step=tracker.step,
                total_steps=tracker.total_steps,
                elapsed=now - tracker.started,
                eta=tracker.eta(index, scale.steps - local_step - 1),
                losses=dict(job.parts),
                preview=preview,
            )
        )
