import pytest
import torch
import torch.nn as nn

from udacisense import UdaciSenseError
from udacisense.models import MODELS, create_model


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "mobilenet_v3_large", "resnet18"])
@pytest.mark.parametrize("channels, size", [(1, 28), (3, 28), (1, 32), (3, 32)])
def test_output_shape_for_channels_and_sizes(name, channels, size):
    model = create_model(name, num_classes=7, in_channels=channels).eval()
    with torch.no_grad():
        assert model(torch.randn(2, channels, size, size)).shape == (2, 7)


def test_mobilenet_stem_keeps_spatial_resolution_for_small_inputs():
    model = create_model("mobilenet_v3_small").eval()
    with torch.no_grad():
        features = model.features(torch.randn(1, 1, 28, 28))
    assert features.shape[-2:] == (2, 2)  # torchvision's ImageNet stem would give 1x1


def test_width_multiplier_shrinks_mobilenet():
    full = sum(p.numel() for p in create_model("mobilenet_v3_small").parameters())
    half = sum(p.numel() for p in create_model("mobilenet_v3_small", width_mult=0.5).parameters())
    assert half < 0.6 * full


def test_batchnorm_momentum_is_not_torchvisions_stale_default():
    norms = [m for m in create_model("mobilenet_v3_small").modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.momentum == 0.1 for m in norms)


def test_unknown_model_suggests_the_closest_or_lists_known_names():
    with pytest.raises(UdaciSenseError, match="unknown model 'mobilenet_v3_smal' \\(did you mean 'mobilenet_v3_small'\\?"):
        create_model("mobilenet_v3_smal")
    with pytest.raises(UdaciSenseError) as error:
        create_model("xyz")
    assert all(name in str(error.value) for name in MODELS.names()) and "path/to/file.py:callable" in str(error.value)


def test_user_model_from_file(user_model_file):
    model = create_model(f"{user_model_file}:TinyNet", num_classes=4, in_channels=3)
    assert model(torch.randn(2, 3, 28, 28)).shape == (2, 4)


def test_user_model_from_module():
    model = create_model("torchvision.models:squeezenet1_1", num_classes=5)
    assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 5)  # the keyword reached the user's callable


@pytest.mark.parametrize(
    "spec, message",
    [
        ("missing_file.py:Net", "does not exist"),
        ("no_such_package_xyz:Net", "cannot import module"),
        ("torch.nn:NoSuchThing", "no callable named"),
    ],
)
def test_bad_user_model_specs_are_clear(spec, message):
    with pytest.raises(UdaciSenseError, match=message):
        create_model(spec)


def test_wrong_model_arguments_are_clear():
    with pytest.raises(UdaciSenseError, match="does not accept"):
        create_model("resnet18", width_mult=0.5)
