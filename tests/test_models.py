import pytest
import torch
import torch.nn as nn

from conftest import forget_registrations, import_user_module
from udacisense import UdaciSenseError
from udacisense.checkpoint import load_model, save_checkpoint
from udacisense.models import MODEL_SOURCES, MODELS, create_model, register_model

ZOO = ["mobilenet_v3_small", "mobilenet_v3_large", "resnet18", "efficientnet_lite0", "mobilevit_xxs", "mobilevitv2_050"]


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("channels, size", [(1, 28), (3, 32)])  # Fashion-MNIST, CIFAR-10
def test_output_shape_for_channels_and_sizes(name, channels, size):
    model = create_model(name, num_classes=7, in_channels=channels).eval()
    with torch.no_grad():
        assert model(torch.randn(2, channels, size, size)).shape == (2, 7)


def test_mobilenet_stem_keeps_spatial_resolution_for_small_inputs():
    model = create_model("mobilenet_v3_small").eval()
    with torch.no_grad():
        features = model.features(torch.randn(1, 1, 28, 28))
    assert features.shape[-2:] == (2, 2)  # torchvision's ImageNet stem would give 1x1


@pytest.mark.parametrize("name, last_stage", [("efficientnet_lite0", "blocks"), ("mobilevit_xxs", "model.stages"),
                                              ("mobilevitv2_050", "model.stages")])
def test_the_timm_models_keep_a_2x2_map_of_a_28_px_image(name, last_stage):
    """A stride-1 stem, as the MobileNetV3s have: the ImageNet stride of 32 would leave 1x1 of a 28 px image. MobileViT
    pads 28 px to 32, so that every 2x2 patch grid is whole and no block interpolates."""
    model = create_model(name).eval()
    shapes = []
    model.get_submodule(last_stage).register_forward_hook(lambda _module, _inputs, output: shapes.append(tuple(output.shape[-2:])))
    with torch.no_grad():
        model(torch.randn(1, 1, 28, 28))
    assert shapes == [(2, 2)]


def test_the_timm_models_have_their_published_sizes():
    millions = {name: sum(p.numel() for p in create_model(name, num_classes=1000, in_channels=3).parameters()) / 1e6
                for name in ("efficientnet_lite0", "mobilevit_xxs", "mobilevitv2_050")}
    assert millions == pytest.approx({"efficientnet_lite0": 4.65, "mobilevit_xxs": 1.27, "mobilevitv2_050": 1.37}, abs=0.02)


@pytest.mark.parametrize("name, default_width", [("mobilenet_v3_small", 1.0), ("efficientnet_lite0", 1.0), ("mobilevitv2_050", 0.5)])
def test_width_multiplier_shrinks_the_families_that_have_one(name, default_width):
    full = sum(p.numel() for p in create_model(name).parameters())
    narrower = sum(p.numel() for p in create_model(name, width_mult=default_width / 2).parameters())
    assert narrower < 0.6 * full


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


USER_MODULE = """
import torch.nn as nn
from udacisense.models import register_model


@register_model("user_registered_net")
class UserRegisteredNet(nn.Module):
    def __init__(self, num_classes=10, in_channels=1, source="labels"):
        super().__init__()
        self.source = source
        self.linear = nn.Linear(in_channels * 28 * 28, num_classes)

    def forward(self, images):
        return self.linear(images.flatten(1))
"""


def test_a_model_registered_in_a_users_module_rebuilds_where_it_was_never_registered(tmp_path, monkeypatch):
    """What a latency probe or a later command does with the checkpoint of a model a user registered: rebuild it from
    the file its checkpoint names. A lambda cannot be imported by name, so it gets no source."""
    forget_registrations(monkeypatch, "user_registered_net", "user_lambda")
    module_file = tmp_path / "user_nets.py"
    module_file.write_text(USER_MODULE)
    import_user_module(monkeypatch, module_file)
    register_model("user_lambda")(lambda num_classes=10, in_channels=1: nn.Linear(1, 1))
    assert MODEL_SOURCES["user_registered_net"] == f"{module_file.resolve()}:UserRegisteredNet" and "user_lambda" not in MODEL_SOURCES

    model = create_model("user_registered_net", source="weights")  # the model's own argument named 'source'
    path = save_checkpoint(tmp_path / "net.pt", model, {"name": "user_registered_net", "kwargs": {"source": "weights"}}, {})
    del MODELS._entries["user_registered_net"]  # as in a process that never imported user_nets
    rebuilt, payload = load_model(path)
    assert payload["model"]["source"] == f"{module_file.resolve()}:UserRegisteredNet" and rebuilt.source == "weights"
    assert torch.equal(rebuilt.linear.weight, model.linear.weight)
