"""Forward+backward time of the VGG19 feature net per optimisation step, by layout and precision.

For each size (long side, 4:3) and variant — fp32 contiguous, fp32 channels_last, bf16 autocast
(channels_last) — it times the work of one step: features to relu5_1, Gram style loss and
relu4_2 content loss in fp32, backward to the pixels.

    .venv/bin/python bench/vgg_throughput.py [--sizes 256 512] [--iters 5] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import time

import torch

from nst_engine.losses import gram
from nst_engine.vgg import CONTENT_LAYER, STYLE_LAYERS, VGGFeatures, pick_device

VARIANTS = {
    "fp32": {"channels_last": False, "bf16": False},
    "fp32+channels_last": {"channels_last": True, "bf16": False},
    "bf16+channels_last": {"channels_last": True, "bf16": True},
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_time(model: VGGFeatures, size: int, iters: int) -> float:
    """Median seconds of one forward+backward at size × 3/4·size."""
    device = model.device
    torch.manual_seed(0)
    x = (torch.rand(1, 3, size * 3 // 4, size, device=device) * 255 - 120).requires_grad_(True)
    with torch.no_grad():
        feats = model(x.detach())
        targets = {k: gram(feats[k]) for k in STYLE_LAYERS}
        content = feats[CONTENT_LAYER].float()
    times = []
    for i in range(iters + 2):
        _sync(device)
        start = time.perf_counter()
        x.grad = None
        out = model(x)
        loss = (out[CONTENT_LAYER].float() - content).square().mean()
        for k in STYLE_LAYERS:
            loss = loss + (gram(out[k]) - targets[k]).square().sum()
        loss.backward()
        _sync(device)
        if i >= 2:  # the first two warm up allocators and cuDNN's autotuner
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    device = pick_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU, {torch.get_num_threads()} threads"
    print(f"device {device} ({name}), torch {torch.__version__}, median of {args.iters}")
    models = {label: VGGFeatures(device, **kw) for label, kw in VARIANTS.items()}
    for size in args.sizes:
        base = None
        for label, model in models.items():
            t = step_time(model, size, args.iters)
            base = base or t
            print(
                f"{size:4d}x{size * 3 // 4:<4d} {label:20s} {t * 1000:8.1f} ms/step  "
                f"{base / t:5.2f}x vs fp32",
                flush=True,
            )


if __name__ == "__main__":
    main()
