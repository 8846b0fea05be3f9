"""The Gatys objective: content loss, Gram style loss and total variation, with their weights.

Normalisation (so one set of weights gives the same look at any size and for any style):

- Gram matrices are averaged over positions, G = F·Fᵀ / (H·W), so they do not grow with the
  image; each style layer's squared error is divided by the squared Frobenius norm of its target
  Gram, so every layer, and every style, starts at the same order of magnitude (≈ 1) however
  large or dark its activations are.
- The content loss is the mean squared error on relu4_2 divided by the target's mean square.
- Total variation is the mean squared difference of neighbouring pixels on the 0..1 scale.

With that, `strength` is a plain multiplier of the style term against the content term.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from .vgg import CONTENT_LAYER, STYLE_LAYERS

# Style/content balance at strength 1.0, tuned by eye at 384 px (chelsea.png with starry-night
# and vaporwave): at 30 vaporwave's sun and grid swallowed the cat; at 10 both styles are plain
# to see and the cat stays a cat.
STYLE_SCALE = 10.0
TV_WEIGHT = 0.0


def _positions(features: torch.Tensor) -> torch.Tensor:
    """N×C×H×W → N×(H·W)×C, at least fp32: a view (no copy) of channels_last fp32 features."""
    n, c, h, w = features.shape
    dtype = torch.promote_types(features.dtype, torch.float32)
    return features.permute(0, 2, 3, 1).reshape(n, h * w, c).to(dtype)


def gram(features: torch.Tensor) -> torch.Tensor:
    """N×C×H×W → N×C×C Gram matrix averaged over positions, in fp32."""
    f = _positions(features)
    return torch.bmm(f.transpose(1, 2), f) / f.shape[1]


class _GramLoss(torch.autograd.Function):
    """w·‖G − T‖² per image, with G = gram(features), and its gradient in one matrix product.

    Autograd through `gram` would run two products for the gradient of FᵀF, add them, and hand
    the convolutions a gradient in the other memory layout; here dL/dF = F·2w(D + Dᵀ)/n with
    D = G − T, computed in the features' own N×H×W×C layout. `target` and `weight` are
    constants (no gradient).
    """

    @staticmethod
    def forward(ctx, features: torch.Tensor, target: torch.Tensor, weight: torch.Tensor):
        f = _positions(features)
        diff = torch.bmm(f.transpose(1, 2), f).div_(f.shape[1]).sub_(target)
        ctx.save_for_backward(f, diff, weight)
        ctx.layout = (features.shape, features.dtype)
        return weight * diff.square().sum((1, 2))

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        f, diff, weight = ctx.saved_tensors
        (n, c, h, w), dtype = ctx.layout
        scale = (2.0 / f.shape[1]) * weight * grad_loss
        grad = torch.bmm(f, (diff + diff.transpose(1, 2)) * scale.view(-1, 1, 1))
        return grad.view(n, h, w, c).permute(0, 3, 1, 2).to(dtype), None, None


def gram_loss(features: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`weight · ‖gram(features) − target‖²` per image of the batch (N), differentiable in
    `features` only."""
    return _GramLoss.apply(features, target, weight)


@dataclass(frozen=True)
class Targets:
    """What the output is pulled towards at one scale.

    `style` holds one blended Gram target per layer; `style_weight` the weight of that layer's
    squared error (see `blend_styles`).
    """

    content: torch.Tensor
    content_weight: float
    style: Mapping[str, torch.Tensor]
    style_weight: Mapping[str, float]
    tv_weight: float


def style_grams(features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The Gram matrix of each style layer (detached)."""
    return {layer: gram(features[layer]).detach() for layer in STYLE_LAYERS}


def blend_styles(
    grams: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float], strength: float
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Fold several styles into one target per layer.

    The loss Σₛ wₛ·‖G − Gₛ‖² / ‖Gₛ‖² equals k·‖G − Ḡ‖² plus a constant, with kₛ = wₛ/‖Gₛ‖²,
    k = Σ kₛ and Ḡ = Σ kₛ·Gₛ / k; so one Gram per layer serves any number of styles. Weights are
    normalised to sum to 1; each layer gets 1/len(STYLE_LAYERS) of `strength · STYLE_SCALE`.
    """
    total = sum(weights)
    scale = strength * STYLE_SCALE / len(STYLE_LAYERS)
    targets: dict[str, torch.Tensor] = {}
    layer_weights: dict[str, float] = {}
    for layer in STYLE_LAYERS:
        ks = [
            w / total / max(g[layer].square().sum().item(), 1e-12)
            for g, w in zip(grams, weights, strict=True)
        ]
        k = sum(ks)
        targets[layer] = sum(ki * g[layer] for ki, g in zip(ks, grams, strict=True)) / k
        layer_weights[layer] = scale * k
    return targets, layer_weights


def make_targets(
    content_features: Mapping[str, torch.Tensor],
    grams: Sequence[Mapping[str, torch.Tensor]],
    weights: Sequence[float],
    strength: float,
    tv_weight: float = TV_WEIGHT,
) -> Targets:
    """The normalised objective for one scale (see the module docstring)."""
    content = content_features[CONTENT_LAYER].detach().float()
    style, style_weight = blend_styles(grams, weights, strength)
    return Targets(
        content=content,
        content_weight=1.0 / max(content.square().mean().item(), 1e-12),
        style=style,
        style_weight=style_weight,
        tv_weight=tv_weight,
    )


def tv_loss(rgb: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of neighbouring pixels, per image of the N×C×H×W batch."""
    dx = rgb[..., :, 1:] - rgb[..., :, :-1]
    dy = rgb[..., 1:, :] - rgb[..., :-1, :]
    return dx.square().flatten(1).mean(1) + dy.square().flatten(1).mean(1)


def objective(
    features: Mapping[str, torch.Tensor], rgb: torch.Tensor, targets: Targets
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss and its parts (content, style, tv) of one image (a batch of one)."""
    total, parts = objective_batch(features, rgb, stack_targets([targets]))
    return total[0], {k: v[0] for k, v in parts.items()}


@dataclass(frozen=True)
class BatchTargets:
    """Several images' Targets stacked along the batch: tensors N×…, weights as N-vectors."""

    content: torch.Tensor
    content_weight: torch.Tensor
    style: Mapping[str, torch.Tensor]
    style_weight: Mapping[str, torch.Tensor]
    tv_weight: torch.Tensor


def stack_targets(targets: Sequence[Targets]) -> BatchTargets:
    """One BatchTargets from each image's Targets (all at the same scale)."""
    first = targets[0]
    device = first.content.device

    def weights(values: list[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32, device=device)

    return BatchTargets(
        content=torch.cat([t.content for t in targets]),
        content_weight=weights([t.content_weight for t in targets]),
        style={k: torch.cat([t.style[k] for t in targets]) for k in STYLE_LAYERS},
        style_weight={k: weights([t.style_weight[k] for t in targets]) for k in STYLE_LAYERS},
        tv_weight=weights([t.tv_weight for t in targets]),
    )


def objective_batch(
    features: Mapping[str, torch.Tensor], rgb: torch.Tensor, targets: BatchTargets
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`objective` for each image of a batch at once: the N losses and their parts (each N).

    Image n's loss depends on image n alone, so the gradient of their sum is each image's own.
    Working on whole batch tensors (no per-image slices of the activations) keeps autograd
    from building and zero-filling a full-size gradient per slice.
    """
    content = features[CONTENT_LAYER].float()
    content_loss = targets.content_weight * (content - targets.content).square().flatten(1).mean(1)
    style_loss = torch.zeros_like(content_loss)
    for layer in STYLE_LAYERS:
        style_loss = style_loss + gram_loss(
            features[layer], targets.style[layer], targets.style_weight[layer]
        )
    parts = {"content": content_loss, "style": style_loss}
    total = content_loss + style_loss
    if bool((targets.tv_weight > 0).any()):
        tv = targets.tv_weight * tv_loss(rgb)
        parts["tv"] = tv
        total = total + tv
    return total, parts
