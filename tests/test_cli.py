"""The command line: bad input gives one line, exit code 2, and writes nothing."""

import dataclasses
import json
import re

import pytest

from atari_rl.cli import build_parser, field_comments, main
from atari_rl.run_files import CONFIG_FILE, shipped_agents


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--game", "nosuchgame"], "unknown game 'nosuchgame'"),
        (["--preset", "nosuch"], "unknown preset 'nosuch'"),
        (["--n-steps", "0"], "--n-steps must be a positive integer"),
        (["--n-steps", "-3"], "--n-steps must be a positive integer"),
        (["--n-steps", "lots"], "--n-steps must be a positive integer or 'episode'"),
        (["--steps", "0"], "--steps must be a positive"),
        (["--optimizer", "sgd"], "--optimizer must be rmsprop or adam"),
        (["--frobnicate", "3"], "unrecognized arguments: --frobnicate"),
    ],
)
def test_bad_train_input_is_one_line_and_writes_nothing(tmp_path, capsys, args, complaint):
    run_dir = tmp_path / "run"
    assert main(["train", "--run-dir", str(run_dir), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert complaint in err
    assert len(err.splitlines()) == 1
    assert not run_dir.exists()


def test_existing_run_dir_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["train", "--run-dir", str(tmp_path), "--steps", "100"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_presets_lists_the_write_up_study(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in ("a2c", "seed-n5", "seed-n20", "seed-n50", "seed-n100", "seed-ninf"):
        assert f"\n{name} " in f"\n{out}"


def test_preset_values_can_be_overridden(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = ["train", "--preset", "seed-n20", "--entropy-coef", "0.02", "--steps", "64",
            "--num-envs", "2", "--no-compile", "--run-dir", str(run_dir)]
    assert main(args) == 0
    config = json.loads((run_dir / CONFIG_FILE).read_text())
    assert config["n_steps"] == 20 and config["action_selection"] == "argmax"
    assert config["entropy_coef"] == 0.02
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["agent_steps"] >= 64


def test_train_help_gives_each_algorithm_its_own_default(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    # a field that means different things to different algorithms says so for each
    assert ('--n-steps N|WORD a2c: N-step returns: a positive integer, or "episode" (Monte '
            "Carlo); dqn: n-step returns; ppo: steps of every env per rollout "
            "(default 5 for a2c, 3 for dqn, 128 for ppo)") in help_text
    assert "--gamma GAMMA discount factor (default 0.99)" in help_text
    # the meaning is the field's comment in its dataclass
    assert "--clip-schedule CLIP_SCHEDULE constant, or linear: the clip range decays" in help_text
    # a comment block above a field is that field's, not the field before it's
    assert ("--keep-checkpoints KEEP_CHECKPOINTS the newest ones kept, besides the "
            "best-scoring one (default 3) --exact-resume") in help_text
    assert "--exact-resume, --no-exact-resume Restart every game at each checkpoint" in help_text


def test_every_option_of_every_command_says_what_it_does():
    parser = build_parser()
    commands = [action for action in parser._actions if action.choices and action.dest == "command"]
    assert commands, "the parser has no sub-commands"
    silent = [f"{name} {option.option_strings[0]}"
              for name, command in commands[0].choices.items()
              for option in command._actions
              if option.option_strings
              and not re.sub(r"\(default[^)]*\)", "", option.help or "").strip()]
    assert silent == []  # a default alone does not say what an option does


def test_train_groups_each_option_under_the_algorithms_that_have_it():
    train = next(action for action in build_parser()._actions
                 if action.dest == "command").choices["train"]
    group_of = {action.option_strings[0]: group.title for group in train._action_groups
                for action in group._group_actions if action.option_strings}
    assert group_of["--gamma"] == "options of every algorithm"  # each config has its own
    assert group_of["--entropy-coef"] == "options of a2c and ppo"
    assert group_of["--buffer-size"] == "dqn options"
    assert group_of["--gae-lambda"] == "ppo options"
    help_of = {action.option_strings[0]: action.help for action in train._actions
               if action.option_strings}
    # RunConfig's meaning, not an algorithm's note on its own default
    assert help_of["--sticky-action-prob"].startswith("the chance that the emulator repeats")


@pytest.mark.parametrize("command", ["evaluate", "record", "report"])
def test_pretrained_help_names_every_shipped_agent(capsys, monkeypatch, command):
    monkeypatch.setenv("COLUMNS", "400")  # argparse would wrap inside "breakout-dqn"
    with pytest.raises(SystemExit):
        main([command, "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    shipped = shipped_agents()
    assert {"breakout-a2c", "breakout-dqn"} <= set(shipped)
    assert f"an agent shipped in pretrained/ ({', '.join(shipped)}) instead of a run" in help_text


@dataclasses.dataclass
class _Commented:
    first: int = 1  # said beside it,
    # and continued below it
    second: int = 2  # said beside it too
    # said above it
    third: int = 3
    fourth: int = 4


def test_field_comments_read_beside_below_and_above_a_field():
    assert field_comments(_Commented) == {"first": "said beside it, and continued below it",
                                          "second": "said beside it too",
                                          "third": "said above it"}


@pytest.mark.parametrize(("given", "expected"), [(None, "20000"), ("5", "5")])
def test_importing_the_package_shortens_openmps_spinning_unless_the_user_set_it(given,
                                                                                 expected):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    if given is not None:
        env["GOMP_SPINCOUNT"] = given
    code = "import atari_rl, os; print(os.environ['GOMP_SPINCOUNT'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == expected


@pytest.mark.parametrize(("value", "annotation", "accepted"), [
    (0.5, "float", True), (1, "float", True), ("lots", "float", False), (True, "float", False),
    (None, "float", False), (None, "float | None", True), (0.5, "float | None", True),
    ("lots", "float | None", False), ("episode", "int | str", True), (2.5, "int", False),
])
def test_overrides_are_checked_against_the_fields_type(value, annotation, accepted):
    from atari_rl.config import _check_type

    if accepted:
        _check_type("some_field", value, annotation)
    else:
        with pytest.raises(ValueError, match="--some-field must be"):
            _check_type("some_field", value, annotation)
