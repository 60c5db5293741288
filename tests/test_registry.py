"""The one registry shape behind models, data sets, stages and export formats."""

import pytest

from udacisense.data import DATASETS
from udacisense.errors import UdaciSenseError
from udacisense.formats import FORMATS
from udacisense.models import MODELS
from udacisense.registry import Registry
from udacisense.stages import STAGES


def test_register_get_and_list():
    colours: Registry[int] = Registry("colour")
    colours.register("red", 1)

    @colours.register("green")
    def green() -> int:
        return 2

    assert colours.get("red") == 1 and colours.get("green") is green
    assert colours.names() == ["red", "green"] and "red" in colours and len(colours) == 2
    with pytest.raises(ValueError, match="colour 'red' is registered twice"):
        colours.register("red", 3)
    assert colours.get("red") == 1
    with pytest.raises(UdaciSenseError, match=r"^recipe line 3: unknown colour 'gren' \(did you mean 'green'\?\)$"):
        colours.get("gren", where="recipe line 3")
    with pytest.raises(UdaciSenseError, match=r"unknown colour 'blue' \(known: red, green\)"):
        colours.get("blue")


@pytest.mark.parametrize("registry, typo, meant", [
    (MODELS, "resnet_18", "resnet18"), (DATASETS, "fashion_mnist", "fashion-mnist"),
    (STAGES, "prune_channel", "prune_channels"), (FORMATS, "pte_int8", "pte-int8"),
])
def test_every_registry_is_one_shape(registry, typo, meant):
    assert isinstance(registry, Registry) and meant in registry.names()
    with pytest.raises(UdaciSenseError, match=f"unknown {registry.kind} '{typo}' \\(did you mean '{meant}'\\?"):
        registry.get(typo)


def test_list_command_prints_every_registry(capsys):
    from udacisense.cli import main

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for registry in (MODELS, DATASETS, STAGES, FORMATS):
        assert all(name in out for name in registry.names())
