"""Faults and bad input around checkpoints: one clear line, exit 2, earlier ones intact."""

import errno
import shutil

import pytest

from atari_rl import checkpoints
from atari_rl.checkpoints import list_checkpoints, load_checkpoint
from atari_rl.cli import main
from atari_rl.run_files import CHECKPOINT_DIR, CHECKPOINT_STATE, CHECKPOINT_TENSORS

SHORT = ["--steps", "1200", "--num-envs", "4", "--no-compile", "--checkpoint-every", "400",
         "--log-every", "400", "--torch-threads", "1", "--env-threads", "1"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("faults") / "run"
    assert main(["train", *SHORT, "--run-dir", str(run_dir)]) == 0
    return run_dir


def copy_run(source, destination):
    shutil.copytree(source, destination)
    return destination


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1
    return err[-1]


def test_resume_of_a_directory_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    assert main(["train", "--resume", str(tmp_path / "photos")]) == 2
    assert "is not a run directory" in one_line_error(capsys)
    assert list((tmp_path / "photos").iterdir()) == []


def test_resume_with_changed_settings_is_refused(finished_run, capsys):
    assert main(["train", "--resume", str(finished_run), "--entropy-coef", "0.5"]) == 2
    assert "only --steps, --torch-threads and --env-threads" in one_line_error(capsys)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing"])
def test_a_damaged_checkpoint_is_named_and_the_earlier_ones_stay(finished_run, tmp_path,
                                                                capsys, damage):
    run_dir = copy_run(finished_run, tmp_path / "run")
    latest = list_checkpoints(run_dir)[-1]
    tensors = latest / CHECKPOINT_TENSORS
    if damage == "truncate":
        tensors.write_bytes(tensors.read_bytes()[:1000])
    elif damage == "garbage":
        (latest / CHECKPOINT_STATE).write_text("{not json")
    else:
        tensors.unlink()
    assert main(["train", "--resume", str(run_dir), "--steps", "1600"]) == 2
    line = one_line_error(capsys)
    assert str(latest) in line and f"delete {latest}" in line
    for earlier in list_checkpoints(run_dir)[:-1]:
        load_checkpoint(earlier)


def test_a_checkpoint_of_another_game_is_refused(finished_run, tmp_path, capsys):
    pong = tmp_path / "pong"
    assert main(["train", *SHORT, "--steps", "400", "--game", "pong", "--run-dir", str(pong)]) == 0
    run_dir = copy_run(finished_run, tmp_path / "run")
    foreign = list_checkpoints(pong)[-1]
    shutil.copytree(foreign, run_dir / CHECKPOINT_DIR / "step-000000009999")
    assert main(["train", "--resume", str(run_dir), "--steps", "20000"]) == 2
    assert "is not this run's" in one_line_error(capsys)


def test_a_full_disk_during_a_checkpoint_leaves_the_earlier_ones(finished_run, tmp_path,
                                                                 capsys, monkeypatch):
    run_dir = copy_run(finished_run, tmp_path / "run")
    before = list_checkpoints(run_dir)

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoints, "save_file", disk_full)
    assert main(["train", "--resume", str(run_dir), "--steps", "2000"]) == 2
    line = one_line_error(capsys)
    assert "No space left on device" in line and "--resume" in line
    assert list_checkpoints(run_dir) == before
    assert not any(p.name.startswith(".tmp") for p in (run_dir / CHECKPOINT_DIR).iterdir())
    for checkpoint in before:
        load_checkpoint(checkpoint)
