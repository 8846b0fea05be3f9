"""The fused Gram style loss against autograd through the plain formula."""

from __future__ import annotations

import pytest
import torch

from nst_engine.losses import gram, gram_loss


def _case(channels_last: bool, dtype: torch.dtype = torch.double):
    generator = torch.Generator().manual_seed(0)
    features = torch.rand(2, 5, 4, 3, generator=generator, dtype=dtype)
    if channels_last:
        features = features.contiguous(memory_format=torch.channels_last)
    target = gram(torch.rand(2, 5, 4, 3, generator=generator, dtype=dtype))
    weight = torch.tensor([0.3, 2.0], dtype=target.dtype)
    return features.requires_grad_(True), target, weight


@pytest.mark.parametrize("channels_last", [True, False])
def test_gram_loss_and_its_gradient_match_the_plain_formula(channels_last: bool) -> None:
    features, target, weight = _case(channels_last)
    plain = weight * (gram(features) - target).square().sum((1, 2))
    fused = gram_loss(features, target, weight)
    torch.testing.assert_close(fused, plain)
    (expected,) = torch.autograd.grad((plain * torch.tensor([1.0, -0.5])).sum(), features)
    (got,) = torch.autograd.grad((fused * torch.tensor([1.0, -0.5])).sum(), features)
    torch.testing.assert_close(got, expected)
    assert torch.autograd.gradcheck(lambda f: gram_loss(f, target, weight), (features,))


def test_gram_loss_hands_back_the_layout_and_dtype_it_was_given() -> None:
    features, target, weight = _case(channels_last=True, dtype=torch.bfloat16)
    (grad,) = torch.autograd.grad(gram_loss(features, target, weight).sum(), features)
    assert grad.dtype == torch.bfloat16
    assert grad.is_contiguous(memory_format=torch.channels_last)
    assert target.dtype == torch.float32  # the Gram itself is fp32 even from bf16 features
