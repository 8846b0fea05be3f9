"""stylize() end to end on tiny images with the real weights, and the pieces it is built from."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from nst_engine import images, styles
from nst_engine.api import Cancelled, InputError, Progress, StyleRequest, StyleSource
from nst_engine.color import rgb_to_ycbcr
from nst_engine.inputs import StyleImage
from nst_engine.losses import STYLE_SCALE, blend_styles, gram, make_targets, tv_loss
from nst_engine.schedule import plan
from nst_engine.targets import TargetCache
from nst_engine.transfer import paint, stylize
from nst_engine.vgg import STYLE_LAYERS, deprocess, load_model

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
STARRY = StyleSource(name="starry-night")


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def content() -> bytes:
    """chelsea.png at 96 px: a small photo with strong colours."""
    img = images.decode((SAMPLES / "chelsea.png").read_bytes())
    return _png(images.fit_long_side(img, 96))


def _run(content: bytes, *sources: StyleSource, **knobs) -> tuple[Image.Image, list[Progress]]:
    knobs.setdefault("size", 64)
    knobs.setdefault("iterations", 6)
    events: list[Progress] = []
    result = stylize(
        StyleRequest(content=content, styles=sources or (STARRY,), **knobs),
        device="cpu",
        on_progress=events.append,
    )
    img = images.decode(result.image)
    assert (img.width, img.height) == (result.width, result.height)
    assert result.iterations == knobs["iterations"] == events[-1].step
    return img, events


def _chroma(img: Image.Image) -> torch.Tensor:
    return rgb_to_ycbcr(images.to_tensor(img))[:, 1:]


def test_a_few_iterations_lower_the_loss(content: bytes) -> None:
    img, events = _run(content, iterations=12)
    assert max(img.size) == 64
    first, last = events[0].losses, events[-1].losses
    assert last["total"] < 0.5 * first["total"]
    assert last["style"] < first["style"]
    assert [e.step for e in events] == list(range(1, 13))
    assert all(e.total_steps == 12 for e in events)


def test_style_of_another_size_and_aspect(content: bytes) -> None:
    tall = styles.image("the-scream").crop((0, 0, 60, 200))
    img, events = _run(content, StyleSource(image=_png(tall)), size=80)
    assert img.size == (80, 53)  # the content's aspect, not the style's
    assert events[-1].losses["total"] < events[0].losses["total"]


def test_blend_folds_weighted_styles_into_one_target() -> None:
    """k·‖G − Ḡ‖² differs from Σ wₛ·‖G − Gₛ‖²/‖Gₛ‖² by a constant only."""
    torch.manual_seed(0)
    layers = list(STYLE_LAYERS)

    def random_grams() -> dict[str, torch.Tensor]:
        return {layer: gram(torch.rand(1, 8, 6, 5)) for layer in layers}

    grams = [random_grams(), random_grams()]
    weights = [1.0, 3.0]
    targets, layer_weights = blend_styles(grams, weights, strength=2.0)
    scale = 2.0 * STYLE_SCALE / len(layers)

    def blended(x: dict[str, torch.Tensor]) -> float:
        return sum(layer_weights[k] * (x[k] - targets[k]).square().sum().item() for k in layers)

    def separate(x: dict[str, torch.Tensor]) -> float:
        return scale * sum(
            w / sum(weights) * ((x[k] - gs[k]).square().sum() / gs[k].square().sum()).item()
            for gs, w in zip(grams, weights, strict=True)
            for k in layers
        )

    a, b = random_grams(), random_grams()
    assert blended(a) - blended(b) == pytest.approx(separate(a) - separate(b), rel=1e-4)


def test_two_blended_styles(content: bytes) -> None:
    more_starry, starry_events = _run(content, STARRY, StyleSource(name="great-wave", weight=0.2))
    more_wave, wave_events = _run(content, STARRY, StyleSource(name="great-wave", weight=5.0))
    for events in (starry_events, wave_events):
        assert events[-1].losses["style"] < events[0].losses["style"]
    assert more_starry.size == more_wave.size
    assert more_starry.tobytes() != more_wave.tobytes()


def test_keep_colours_keeps_the_photos_chroma(content: bytes) -> None:
    photo = images.decode(content).resize((64, 43), Image.Resampling.LANCZOS)
    kept, _ = _run(content, preserve_colors=True, iterations=10)
    free, _ = _run(content, preserve_colors=False, iterations=10)
    kept_err = (_chroma(kept) - _chroma(photo)).abs().mean().item()
    free_err = (_chroma(free) - _chroma(photo)).abs().mean().item()
    assert kept_err < 0.005
    assert kept_err < 0.1 * free_err


def test_stop_flag_stops_within_one_step(content: bytes) -> None:
    seen: list[int] = []
    stop = False

    def on_progress(p: Progress) -> None:
        nonlocal stop
        seen.append(p.step)
        stop = p.step >= 2

    with pytest.raises(Cancelled):
        stylize(
            StyleRequest(content=content, styles=(STARRY,), size=64, iterations=50),
            device="cpu",
            on_progress=on_progress,
            should_stop=lambda: stop,
        )
    assert seen == [1, 2]


def test_seed_reproduces_on_cpu(content: bytes) -> None:
    a, _ = _run(content, seed=7, iterations=3)
    b, _ = _run(content, seed=7, iterations=3)
    c, _ = _run(content, seed=8, iterations=3)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()


def test_previews_at_scale_boundaries_and_snapshots(content: bytes) -> None:
    events: list[Progress] = []
    snaps: list[tuple[int, tuple[int, int]]] = []
    width, height = Image.open(io.BytesIO(content)).size
    scales = plan(width, height, 128, "draft", 4)
    assert len(scales) == 2 and all(s.steps >= 1 for s in scales)
    stylize(
        StyleRequest(content=content, styles=(STARRY,), size=128, quality="draft", iterations=4),
        device="cpu",
        on_progress=events.append,
        preview_interval=3600,
        on_snapshot=lambda step, img: snaps.append((step, img.size)),
        snapshot_every=2,
    )
    expected = [(i + 1, 2) for i, s in enumerate(scales) for _ in range(s.steps)]
    assert [(e.scale, e.scales) for e in events] == expected
    ends = [scales[0].steps, scales[0].steps + scales[1].steps]
    assert [e.step for e in events if e.preview is not None] == ends  # the end of each scale
    for e in events:
        if e.preview is not None:
            preview = Image.open(io.BytesIO(e.preview))
            assert preview.format == "JPEG" and max(preview.size) <= 256
    size_at = [(s.width, s.height) for s in scales for _ in range(s.steps)]
    assert snaps == [(step, size_at[step - 1]) for step in (2, 4)]
    assert snaps[-1][1] == (128, 85)
    assert events[-1].eta == 0.0


@pytest.mark.parametrize(
    ("content_bytes", "sources", "message"),
    [
        (b"", (STARRY,), "empty"),
        (b"hello, this is text", (STARRY,), "image"),
        (None, (StyleSource(name="stary-night"),), "starry-night"),
        (None, (StyleSource(image=b"GIF89a\x01"),), "image"),
    ],
)
def test_bad_input_is_an_input_error(
    content: bytes, content_bytes: bytes | None, sources: tuple[StyleSource, ...], message: str
) -> None:
    request = StyleRequest(
        content=content if content_bytes is None else content_bytes, styles=sources
    )
    with pytest.raises(InputError, match=message):
        stylize(request, device="cpu")


def test_truncated_content_is_an_input_error(content: bytes) -> None:
    with pytest.raises(InputError):
        stylize(StyleRequest(content=content[: len(content) // 2], styles=(STARRY,)), device="cpu")


def test_plan_goes_coarse_to_fine_and_honours_iterations() -> None:
    scales = plan(640, 480, 512, "standard")
    sides = [max(s.width, s.height) for s in scales]
    assert sides == sorted(sides) and sides[-1] == 512
    assert (scales[-1].width, scales[-1].height) == (512, 384)
    for n in (1, 2, 3, 7, 300):
        assert sum(s.steps for s in plan(640, 480, 512, "high", n)) == n
        assert all(s.steps >= 1 for s in plan(640, 480, 512, "high", n))


def test_target_cache_survives_on_disk(tmp_path: Path) -> None:
    grams = {"relu1_1": torch.rand(1, 4, 4)}
    TargetCache(directory=tmp_path).put("udnie", 10, 12, grams)
    fresh = TargetCache(directory=tmp_path)
    loaded = fresh.get("udnie", 10, 12, torch.device("cpu"))
    assert loaded is not None
    torch.testing.assert_close(loaded["relu1_1"], grams["relu1_1"])
    assert fresh.get("udnie", 12, 10, torch.device("cpu")) is None
    assert TargetCache().get("udnie", 10, 12, torch.device("cpu")) is None


def test_tv_loss_measures_pixel_noise() -> None:
    flat = torch.full((1, 3, 8, 8), 0.5)
    assert tv_loss(flat).item() == 0.0
    torch.manual_seed(0)
    assert tv_loss(flat + 0.1 * torch.randn_like(flat)).item() > tv_loss(flat + 0.01).item()


def test_a_thin_photo_at_a_tiny_size_still_paints() -> None:
    thin = _png(Image.new("RGB", (400, 40), (200, 120, 40)))
    result = stylize(
        StyleRequest(content=thin, styles=(STARRY,), size=32, iterations=2), device="cpu"
    )
    assert (result.width, result.height) == (32, 16)


def test_the_painting_never_leaves_what_rgb_can_show() -> None:
    """Half black, half white (the noise alone would cross 0 and 1) against a strong style:
    every pixel the optimiser holds stays in 0..1, so nothing is clipped on output."""
    photo = Image.new("RGB", (64, 48), "black")
    photo.paste(Image.new("RGB", (32, 48), "white"), (32, 0))
    x, _, _ = paint(
        load_model(torch.device("cpu")),
        photo,
        [StyleImage(styles.image("vaporwave"), 1.0, "vaporwave")],
        plan(64, 48, 64, "draft", 8),
        lambda content, grams, weights: make_targets(content, grams, weights, strength=3.0),
    )
    rgb = deprocess(x)
    assert rgb.min().item() >= 0.0 and rgb.max().item() <= 1.0
