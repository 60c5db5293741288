"""Property-based tests of the recipe front door (hypothesis, fixed seed): mutated recipes, raw bytes, YAML bombs and
``--set`` strings get exit status 0 or one line and exit status 2 from ``udacisense check`` (and the same line from
``run``, before any work), never a traceback; a valid
recipe survives load -> resolve -> dump -> load unchanged. ``benchmarks/fuzz.py`` runs the same properties longer."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from udacisense.checkpoint import save_checkpoint
from udacisense.cli import main
from udacisense.pipeline.recipe import list_recipes, load_recipe, resolve_recipe_path

SHIPPED = {name: yaml.safe_load(resolve_recipe_path(name).read_text()) for name, _ in list_recipes()}
EXAMPLES = int(os.environ.get("UDACISENSE_FUZZ_EXAMPLES", "100"))  # per property; benchmarks/fuzz.py raises it
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**40), max_value=10**40),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=16))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                        st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), inner, max_size=3)),
                      max_leaves=10)


def paths(node: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every key path in a nested recipe (mapping keys and list indexes)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield prefix + (key,)
        yield from paths(child, prefix + (key,))


@st.composite
def mutated_recipes(draw) -> Any:
    """A shipped recipe with 1-3 mutations: a value replaced (any type), a key deleted, an unknown key added, or a
    whole section replaced; sometimes the document itself is not a mapping."""
    recipe = copy.deepcopy(draw(st.sampled_from(sorted(SHIPPED.items())))[1])
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(list(paths(recipe)) or [()]))
        parent = recipe
        for key in where[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "delete", "add", "root"]))
        if action == "root" or not where:
            return draw(values)
        if action == "replace":
            parent[where[-1]] = draw(values)
        elif action == "delete":
            del parent[where[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=12))] = draw(values)
    return recipe


def check(path: str, capsys, *options: str) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main(["check", path, *options])  # any exception other than these two fails the test here
    except SystemExit as exit:  # argparse's own usage errors (e.g. a --set value that starts with '-')
        code = exit.code
    return code, capsys.readouterr().err


def assert_clean(code: int, err: str) -> None:
    assert code in (0, 2), code
    if code == 2:
        assert err.startswith("udacisense: error: ") and err.count("\n") == 1 and len(err) < 2000, err


@FUZZ
@given(recipe=mutated_recipes())
def test_mutated_recipes_are_valid_or_one_line(recipe, tmp_path_factory, capsys):
    path = tmp_path_factory.mktemp("fuzz") / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, allow_unicode=True))
    code, err = check(str(path), capsys)
    assert_clean(code, err)
    if code == 0:  # what passed the check survives the round trip of a run's recipe.yaml
        assert_round_trip(path)
    else:  # 'run' refuses it the same way, before any work (nothing is written)
        runs = path.parent / "runs"
        assert main(["run", str(path), "--runs-dir", str(runs)]) == 2 and capsys.readouterr().err == err
        assert not runs.exists() or not any(runs.iterdir())


@FUZZ
@given(data=st.binary(max_size=300))
def test_raw_bytes_are_one_line(data, tmp_path_factory, capsys):
    path = tmp_path_factory.mktemp("fuzz") / "recipe.yaml"
    path.write_bytes(data)
    assert_clean(*check(str(path), capsys))


@FUZZ
@given(assignment=st.one_of(st.text(max_size=40), st.builds(lambda key, value: f"{key}={value}",
                                                                st.sampled_from(["prune.ratio", "baseline.train.epochs", "threads", "export.formats",
                                                                                 "targets", "data", "prune", "quantize.method", "stages"]),
                                                                st.text(max_size=30))))
def test_set_strings_are_valid_or_one_line(assignment, capsys):
    assert_clean(*check("mobile", capsys, "--set", assignment))


@pytest.mark.parametrize("text, message", [
    ("a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n"
                                                      for p, c in zip("abcdefgh", "bcdefghi")), "aliases"),  # 9^9 leaves
    ("[" * 5000 + "]" * 5000, "nested"),
    ("name: \xff\xfe bytes", None),
])
def test_yaml_bombs_deep_nesting_and_bad_encodings_are_one_line(text, message, tmp_path, capsys):
    path = tmp_path / "bomb.yaml"
    path.write_bytes(text.encode("latin-1"))
    code, err = check(str(path), capsys)
    assert code == 2
    assert_clean(code, err)
    assert message is None or message in err


def resolved(pipeline) -> dict:
    """What a run writes to its recipe.yaml: every field, each stage with all its parameters."""
    return pipeline.recipe.model_dump(mode="json") | {"stages": [stage.config() | {"id": stage.id} for stage in pipeline.stages]}


def assert_round_trip(path: Path) -> None:
    first = resolved(load_recipe(path))
    again = path.with_name("resolved.yaml")
    again.write_text(yaml.safe_dump(first, sort_keys=False))
    assert resolved(load_recipe(again)) == first


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_recipes_survive_the_round_trip(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    teacher = SHIPPED[name].get("baseline", {}).get("checkpoint")
    if teacher:  # student.yaml names teacher.yaml's checkpoint, which must exist for the recipe to load
        Path(teacher).parent.mkdir(parents=True)
        save_checkpoint(teacher, torch.nn.Linear(1, 1), {"name": "resnet18"}, {})
    path = tmp_path / f"{name}.yaml"
    path.write_text(resolve_recipe_path(name).read_text())
    assert_round_trip(path)
