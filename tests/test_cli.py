import json

import pytest

from udacisense.cli import main


def run_cli(capsys, *args):
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def trained_run(tmp_path, capsys, user_model_file):
    code, out, _ = run_cli(
        capsys, "train", "--data", "synthetic", "--model", f"{user_model_file}:TinyNet", "--model-arg", "width=16",
        "--epochs", "1", "--batch-size", "32", "--threads", "1", "--name", "cli", "--runs-dir", str(tmp_path),
    )
    assert code == 0 and "test top-1" in out
    return tmp_path / "cli"


def test_train_evaluate_profile_round_trip(trained_run, capsys):
    code, out, _ = run_cli(capsys, "evaluate", "--checkpoint", str(trained_run / "best.pt"))
    assert code == 0 and "top-1" in out and "class_0" in out
    result = json.loads((trained_run / "eval.json").read_text())
    assert result["count"] == 400 and len(result["confusion_matrix"]) == 10
    code, out, _ = run_cli(capsys, "profile", "--checkpoint", str(trained_run / "best.pt"), "--runs", "5", "--no-memory")
    assert code == 0 and "MACs" in out
    profile = json.loads((trained_run / "profile.json").read_text())
    assert profile["input_shape"] == [1, 1, 28, 28] and profile["macs"] > 0


def test_resume_reuses_the_saved_options(trained_run, capsys):
    code, out, _ = run_cli(capsys, "train", "--name", "cli", "--runs-dir", str(trained_run.parent), "--resume")
    assert code == 0 and "test top-1" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--model", "mobilenetv3", "--data", "synthetic"], "unknown model 'mobilenetv3'"),
        (["train", "--data-root", "/nonexistent/fmnist"], "apt-get install -y dataset-fashion-mnist"),
        (["train", "--model-arg", "oops"], "KEY=VALUE"),
        (["evaluate", "--checkpoint", "/nonexistent.pt"], "does not exist"),
        (["profile", "--model", "resnet18", "--input-shape", "28x28"], "C,H,W"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(args, message, capsys, tmp_path):
    code, _, err = run_cli(capsys, *args, *(["--runs-dir", str(tmp_path)] if args[0] == "train" else []))
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("argument, message", [
    ("in_channels=3", "model '{model}' cannot take this data's 1x28x28 images (channels x height x width): Given groups=1, weight of size"),
    ("num_classes=3", "model '{model}' gives outputs of shape (1, 3) for one image, not (1, 10): build it with num_classes=10"),
])
def test_a_model_that_does_not_fit_the_data_is_one_line_before_training_and_leaves_the_name_free(argument, message, tmp_path, capsys,
                                                                                                 user_model_file):
    model = f"{user_model_file}:TinyNet"
    common = ["train", "--data", "synthetic", "--model", model, "--model-arg", "width=16", "--epochs", "1", "--batch-size", "32", "--threads", "1",
              "--name", "fits", "--runs-dir", str(tmp_path)]  # trained_run's settings, which learn
    code, _, err = run_cli(capsys, *common, "--model-arg", argument)
    assert code == 2 and message.format(model=model) in err and err.count("\n") == 1
    assert not (tmp_path / "fits" / "last.pt").exists()  # refused before the first step
    assert run_cli(capsys, *common)[0] == 0  # the corrected command is not refused for the folder the first one left


def test_unknown_config_key_suggests_the_right_one(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  epoch: 3\n")
    code, _, err = run_cli(capsys, "train", "--config", str(config), "--runs-dir", str(tmp_path))
    assert code == 2 and "unknown key 'train.epoch' (did you mean 'epochs'?)" in err


def test_every_example_in_every_help_is_a_valid_command_line():
    """The examples users copy from --help must parse: a renamed flag breaks this test, not the user."""
    import shlex

    from udacisense.cli import build_parser

    parser = build_parser()
    subcommands = next(action for action in parser._actions if hasattr(action, "choices") and isinstance(action.choices, dict)).choices
    examples = 0
    for name, subparser in subcommands.items():
        text = (subparser.epilog or "").replace("\\\n", " ")
        lines = [line.split("  #")[0].strip() for line in text.splitlines() if line.strip().startswith("udacisense ")]
        assert lines, f"'udacisense {name} --help' shows no example"
        for line in lines:
            args = parser.parse_args(shlex.split(line)[1:])  # argparse exits (a test failure) on an unknown flag or choice
            assert args.command == shlex.split(line)[1]
            examples += 1
    assert examples >= len(subcommands)
