"""The optimisation: paint the content photo in the requested styles, coarse to fine.

At each scale of the preset's schedule the image is optimised with L-BFGS (fp32, one objective
evaluation per step) against content and style targets computed once for that scale; the next
scale starts from the bicubic upsample of the previous result. The image lives in the Caffe
input space of the VGG weights throughout, boxed to what 0..1 RGB can show: the optimiser never
leaves that range, so the picture delivered is the one whose loss it minimised (unboxed, ~3 % of
the pixels drift out of range and clipping them on output cost five times the loss).

Presets and scale planning live in `schedule`, decoding and planning a request in `inputs`,
a job's progress reports in `paint_job`.
"""

from __future__ import annotations

import functools
import gc
import logging
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from . import images, timelapse
from .api import Cancelled, EngineError, InputError, Progress, Result, StyleRequest
from .color import luminance, match_luminance
from .inputs import Prepared, StyleImage, input_copies, prepare
from .lbfgs import BatchedLBFGS
from .losses import Targets, make_targets, objective_batch, stack_targets, style_grams
from .paint_job import PaintJob, TargetsFn, Tracker, publish, to_image
from .precision import use_bf16
from .schedule import Scale, style_dims
from .targets import TargetCache, default_cache
from .vgg import VGGFeatures, caffe_range, load_model, pick_device, preprocess

log = logging.getLogger(__name__)

# Seeded noise added to the first scale's starting image, on the 0..1 scale.
INIT_NOISE = 0.02
LBFGS_HISTORY = 20
OUT_OF_MEMORY = "Ran out of memory painting this image; try a smaller size."


def _resize(img: Image.Image, width: int, height: int) -> Image.Image:
    if img.size == (width, height):
        return img
    return img.resize((width, height), Image.Resampling.LANCZOS)


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


def _is_out_of_memory(exc: BaseException) -> bool:
    # the CPU allocator's failure is a plain RuntimeError
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)
    )


def _release_memory(device: torch.device) -> None:
    """Give cached blocks back after an OOM, once the failed job's tensors are unreachable."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _result(x: torch.Tensor, colour: torch.Tensor | None, job: PaintJob, dev) -> Result:
    out = to_image(x, colour)
    assert job.tracker is not None
    animation, frame_count = None, 0
    if job.frames is not None:
        assert job.request is not None
        encoded = timelapse.encode(
            [*job.frames, out], out.size, job.request.timelapse_format,
            job.request.timelapse_max_bytes,
        )  # fmt: skip
        if encoded is not None:
            animation, frame_count = encoded
    seconds = time.monotonic() - job.tracker.started
    log.info("stylized %dx%d in %.1fs on %s", out.width, out.height, seconds, dev)
    return Result(
        image=images.encode(out, "PNG"),
        width=out.width,
        height=out.height,
        seconds=seconds,
        iterations=job.tracker.total_steps,
        device=str(dev),
        losses=dict(job.parts),
        timelapse=animation,
        timelapse_frames=frame_count,
        inputs=(
            input_copies(job.content, job.styles, out.size)
            if job.request is not None and job.request.input_copies
            else ()
        ),
    )


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
    (outcome,) = stylize_batch(
        [request],
        device=device,
        on_progress=[on_progress],
        should_stop=[should_stop],
        preview_interval=preview_interval,
        on_snapshot=[on_snapshot],
        snapshot_every=snapshot_every,
    )
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def stylize_batch(
    requests: Sequence[StyleRequest],
    *,
    device: str | torch.device | None = None,
    on_progress: Sequence[Callable[[Progress], None] | None] | None = None,
    should_stop: Sequence[Callable[[], bool] | None] | None = None,
    preview_interval: float | None = None,
    on_snapshot: Sequence[Callable[[int, Image.Image], None] | None] | None = None,
    snapshot_every: int | None = None,
) -> list[Result | Exception]:
    """Run several style transfers; those with the same schedule paint as one batch.

    Requests whose plans match (same size at every scale, same steps) share each step's forward
    and backward pass as one N×3×H×W batch, each with its own L-BFGS history, targets, seed,
    progress and stop flag; the others run one batch after another. Returns, per request in
    order, its Result or its typed error (InputError, Cancelled, EngineError), never raising
    for one request's failure.
    """
    count = len(requests)
    on_progress = list(on_progress or [None] * count)
    should_stop = list(should_stop or [None] * count)
    on_snapshot = list(on_snapshot or [None] * count)
    started = time.monotonic()
    dev = pick_device(device)
    outcomes: list[Result | Exception | None] = [None] * count
    groups: dict[tuple, list[tuple[int, Prepared]]] = {}
    for i, request in enumerate(requests):
        try:
            prepared = prepare(request)
            bf16 = use_bf16(dev, request.precision)
        except (InputError, EngineError) as exc:
            outcomes[i] = exc
            continue
        key = (tuple(prepared.scales), bf16)
        groups.setdefault(key, []).append((i, prepared))
    model = load_model(dev)
    for (_, bf16), members in groups.items():
        jobs = [
            PaintJob(
                content=p.content,
                styles=p.styles,
                targets_fn=functools.partial(make_targets, strength=p.request.strength),
                preserve_colors=p.request.preserve_colors,
                seed=p.request.seed,
                on_progress=on_progress[i],
                should_stop=should_stop[i],
                on_snapshot=on_snapshot[i],
                tracker=Tracker(list(p.scales), started),
                init=p.init,
                frames=[] if p.request.timelapse else None,
                frame_every=timelapse.frame_interval(sum(s.steps for s in p.scales)),
                request=p.request,
            )
            for i, p in members
        ]
        oom = False
        try:
            paint_jobs(
                model,
                jobs,
                members[0][1].scales,
                preview_interval=preview_interval,
                snapshot_every=snapshot_every,
                bf16=bf16,
            )
        except Exception as exc:
            if not _is_out_of_memory(exc):
                raise
            log.warning("out of memory on %s painting %d job(s): %s", dev, len(jobs), exc)
            oom = True  # handled below, once this frame no longer holds the traceback
        if oom:
            for job in jobs:
                job.x = None
            _release_memory(dev)
            for i, _ in members:
                outcomes[i] = EngineError(OUT_OF_MEMORY)
            continue
        for (i, _), job in zip(members, jobs, strict=True):
            if job.error is not None:
                outcomes[i] = job.error
            else:
                assert job.x is not None
                outcomes[i] = _result(job.x, job.colour, job, dev)
    assert all(o is not None for o in outcomes)
    return outcomes  # type: ignore[return-value]


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
    bf16: bool = False,
) -> tuple[torch.Tensor, dict[str, float], torch.Tensor | None]:
    """The coarse-to-fine optimisation of one image (a batch of one; see `paint_jobs`).

    Returns the final image in Caffe space, the last loss parts, and (keep-colours only) the
    content's RGB whose chroma the output takes. Raises Cancelled or EngineError.
    """
    job = PaintJob(
        content=content,
        styles=style_list,
        targets_fn=targets_fn,
        preserve_colors=preserve_colors,
        seed=seed,
        on_progress=on_progress,
        should_stop=should_stop,
        on_snapshot=on_snapshot,
        tracker=Tracker(list(scales), started if started is not None else time.monotonic()),
    )
    paint_jobs(
        model, [job], scales, preview_interval=preview_interval, snapshot_every=snapshot_every,
        cache=cache, bf16=bf16,
    )  # fmt: skip
    if job.error is not None:
        raise job.error
    assert job.x is not None
    return job.x, job.parts, job.colour


def _scale_start(
    model: VGGFeatures, job: PaintJob, scale: Scale, cache: TargetCache
) -> tuple[torch.Tensor, Targets]:
    """The photo at this scale (Caffe space) and the job's targets there (always fp32)."""
    rgb = images.to_tensor(_resize(job.content, scale.width, scale.height)).to(model.device)
    grey = None
    if job.preserve_colors:
        job.colour = rgb
        grey = luminance(rgb)
        rgb = grey
    start = preprocess(rgb)
    with torch.no_grad():
        content_features = model(start, bf16=False)
    grams = [_style_grams(model, s, scale, grey, cache) for s in job.styles]
    targets = job.targets_fn(content_features, grams, [s.weight for s in job.styles])
    return start, targets


def paint_jobs(
    model: VGGFeatures,
    jobs: Sequence[PaintJob],
    scales: Sequence[Scale],
    *,
    preview_interval: float | None = None,
    snapshot_every: int | None = None,
    cache: TargetCache | None = None,
    bf16: bool = False,
) -> None:
    """The coarse-to-fine optimisation loop for jobs that share one schedule, as one batch.

    Each step evaluates all live jobs' images in one forward/backward pass; every job's loss is
    its own, and so are its gradient and its L-BFGS history, so a job paints the same with or
    without company (up to float rounding). A job that is stopped or diverges gets its `error`
    and leaves the batch; the others go on. Finished jobs get `x`, `parts` and `colour`.
    """
    cache = cache or default_cache()
    device = model.device
    low, high = caffe_range(device)
    live = list(jobs)
    for job in live:
        job.tracker = job.tracker or Tracker(list(scales), time.monotonic())
        job.tracker.last_preview = job.tracker.started
    x: torch.Tensor | None = None  # the live jobs' images, N×3×H×W, Caffe space

    def drop(gone: dict[int, Exception]) -> None:
        nonlocal live, x, targets, stacked
        if not gone:
            return
        for i, error in gone.items():
            live[i].error = error
        rows = [i for i in range(len(live)) if i not in gone]
        live = [live[i] for i in rows]
        targets = [targets[i] for i in rows]
        if rows:
            assert x is not None
            x = _channels_last(x[rows])
            optimiser.keep(rows)
            stacked = stack_targets(targets)

    h_diag: torch.Tensor | None = None  # each job's curvature scale, carried to the next scale
    for index, scale in enumerate(scales):
        starts_targets = [_scale_start(model, job, scale, cache) for job in live]
        targets = [t for _, t in starts_targets]
        stacked = stack_targets(targets)
        if x is None:
            x = torch.cat([
                _first_image(job, start, scale)
                for job, (start, _) in zip(live, starts_targets, strict=True)
            ])  # fmt: skip
        else:
            x = F.interpolate(
                x, size=(scale.height, scale.width), mode="bicubic", align_corners=False
            )
        del starts_targets
        # Hold the pixels as N×H×W×C, whose N×C×H×W view is already channels_last for the
        # convolutions; each job's row of the flat N×(H·W·C) view is its L-BFGS variable, boxed
        # per channel (the flat row's channel varies fastest).
        x = _channels_last(x.detach().clamp(low.view(1, 3, 1, 1), high.view(1, 3, 1, 1)))
        optimiser = BatchedLBFGS(
            len(live), x[0].numel(), history=LBFGS_HISTORY, device=device, h_diag=h_diag
        )
        pixels = scale.width * scale.height
        flat_low, flat_high = low.repeat(pixels), high.repeat(pixels)

        for local_step in range(scale.steps):
            drop({
                i: Cancelled() for i, job in enumerate(live)
                if job.should_stop is not None and job.should_stop()
            })  # fmt: skip
            if not live:
                return
            image = x.detach().requires_grad_(True)
            loss, loss_parts = objective_batch(model(image, bf16=bf16), image / 255.0, stacked)
            loss_parts["total"] = loss
            # L-BFGS minimises loss × pixel count: the normalised losses are means, and their
            # per-pixel gradients (≈1e-7) are so small that its curvature pairs would fall under
            # its fixed 1e-10 cut-off.
            (loss.sum() * image[0].numel()).backward()
            assert image.grad is not None
            flat = x.detach().permute(0, 2, 3, 1).view(len(live), -1)  # shares x's storage
            optimiser.step(
                flat, image.grad.permute(0, 2, 3, 1).reshape(len(live), -1), flat_low, flat_high
            )
            names = list(loss_parts)
            values = torch.stack([loss_parts[k].detach() for k in names], 1).tolist()
            diverged: dict[int, Exception] = {}
            for i, (job, row) in enumerate(zip(live, values, strict=True)):
                job.parts = dict(zip(names, row, strict=True))
                if not all(v == v for v in row):  # NaN: the optimisation blew up
                    diverged[i] = EngineError("The optimisation diverged; try a lower strength.")
                    continue
                publish(job, x[i : i + 1], index, scale, local_step, preview_interval,
                        snapshot_every)  # fmt: skip
            drop(diverged)
            if not live:
                return
        h_diag = optimiser.learned_scale()
    assert x is not None
    for i, job in enumerate(live):
        job.x = x[i : i + 1].detach()


def _first_image(job: PaintJob, start: torch.Tensor, scale: Scale) -> torch.Tensor:
    """The job's starting point: its init image at this scale, else the photo plus seeded noise."""
    if job.init is not None:
        init = images.to_tensor(_resize(job.init, scale.width, scale.height))
        return preprocess(init.to(start.device))
    generator = torch.Generator().manual_seed(job.seed)
    noise = torch.randn(start.shape, generator=generator) * (INIT_NOISE * 255.0)
    return start + noise.to(start.device)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """N×C×H×W with N×H×W×C storage (so each image's pixels are one contiguous row)."""
    return x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
