"""Colour helpers for keep-colours transfer: YCbCr (BT.601, full range) and luminance matching."""

from __future__ import annotations

import torch

_TO_YCBCR = (
    (0.299, 0.587, 0.114),
    (-0.168736, -0.331264, 0.5),
    (0.5, -0.418688, -0.081312),
)
_FROM_YCBCR = (
    (1.0, 0.0, 1.402),
    (1.0, -0.344136, -0.714136),
    (1.0, 1.772, 0.0),
)


def _mix(x: torch.Tensor, matrix: tuple[tuple[float, ...], ...]) -> torch.Tensor:
    m = x.new_tensor(matrix)
    return torch.einsum("ij,njhw->nihw", m, x)


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """N×3×H×W RGB in 0..1 → Y, Cb, Cr in 0..1 (chroma centred on 0.5)."""
    ycc = _mix(rgb, _TO_YCBCR)
    return ycc + ycc.new_tensor((0.0, 0.5, 0.5)).view(1, 3, 1, 1)


def ycbcr_to_rgb(ycc: torch.Tensor) -> torch.Tensor:
    """Inverse of `rgb_to_ycbcr` (not clamped)."""
    return _mix(ycc - ycc.new_tensor((0.0, 0.5, 0.5)).view(1, 3, 1, 1), _FROM_YCBCR)


def luminance(rgb: torch.Tensor) -> torch.Tensor:
    """The Y channel repeated as a grey N×3×H×W image."""
    return rgb_to_ycbcr(rgb)[:, :1].expand(-1, 3, -1, -1).contiguous()


def match_luminance(style_grey: torch.Tensor, content_grey: torch.Tensor) -> torch.Tensor:
    """Shift and scale the style's grey levels to the content's mean and spread."""
    s_mean, s_std = style_grey.mean(), style_grey.std().clamp_min(1e-4)
    c_mean, c_std = content_grey.mean(), content_grey.std()
    return ((style_grey - s_mean) * (c_std / s_std) + c_mean).clamp(0.0, 1.0)


def with_chroma_of(luma_rgb: torch.Tensor, colour_rgb: torch.Tensor) -> torch.Tensor:
    """The luminance of `luma_rgb` with the chroma (Cb, Cr) of `colour_rgb`, clamped to 0..1."""
    y = rgb_to_ycbcr(luma_rgb)[:, :1]
    cbcr = rgb_to_ycbcr(colour_rgb)[:, 1:]
    return ycbcr_to_rgb(torch.cat([y, cbcr], dim=1)).clamp(0.0, 1.0)
