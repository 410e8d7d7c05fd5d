"""Checkpoints and resume: a run killed with SIGKILL and resumed equals one never interrupted."""

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from atari_rl.checkpoints import list_checkpoints, load_checkpoint, load_tensors
from atari_rl.config import from_dict
from atari_rl.metrics import MetricsLogger
from atari_rl.run_files import CONFIG_FILE, FINAL_POLICY, GAMES_FILE, METRICS_FILE
from atari_rl.stop_signals import StopSignals
from atari_rl.training import make_agent

SHORT_RUN = ["--steps", "3200", "--num-envs", "4", "--no-compile", "--checkpoint-every", "800",
             "--log-every", "400", "--seed", "3", "--torch-threads", "1", "--env-threads", "1"]


def train_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "atari_rl.cli", "train", *args]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(train_command(*args), capture_output=True, text=True, timeout=300)


def rows_without_timing(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return [{k: v for k, v in row.items() if k != "steps_per_s"} for row in
                csv.DictReader(handle)]


def kill_after_checkpoints(run_dir: Path, count: int, *args: str) -> None:
    process = subprocess.Popen(train_command(*args), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while len(list_checkpoints(run_dir)) < count and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


DQN_OPTIONS = ["--algo", "dqn", "--learning-starts", "400", "--buffer-size", "4000",
               "--batch-size", "32", "--target-update", "800", "--no-bf16"]
ALGO_OPTIONS = {
    "a2c": ["--algo", "a2c"],
    "dqn": DQN_OPTIONS,
    # the next batch gathered in a thread: a checkpoint must hold the batch being gathered
    "dqn-prefetch": [*DQN_OPTIONS, "--prefetch"],
    "ppo": ["--algo", "ppo", "--n-steps", "32", "--epochs", "2", "--minibatches", "2"],
}


@pytest.mark.parametrize("algo", list(ALGO_OPTIONS))
def test_resume_after_sigkill_equals_the_uninterrupted_run(tmp_path, algo):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    options = [*SHORT_RUN, *ALGO_OPTIONS[algo], "--exact-resume"]
    finished = run(*options, "--run-dir", str(straight))
    assert finished.returncode == 0, finished.stderr
    kill_after_checkpoints(killed, 2, *options, "--run-dir", str(killed))
    resumed = run("--resume", str(killed))
    assert resumed.returncode == 0, resumed.stderr
    for name in (METRICS_FILE, GAMES_FILE):
        assert rows_without_timing(killed / name) == rows_without_timing(straight / name), name
    ours, theirs = (load_tensors(d / FINAL_POLICY) for d in (killed, straight))
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name


def test_sigterm_writes_a_checkpoint_and_resume_finishes(tmp_path):
    run_dir = tmp_path / "run"
    process = subprocess.Popen(train_command(*SHORT_RUN, "--steps", "400000", "--run-dir",
                                             str(run_dir)), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (run_dir / METRICS_FILE).exists():
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM
    assert "--resume" in err.strip().splitlines()[-1]
    latest = list_checkpoints(run_dir)[-1]
    _, state = load_checkpoint(latest)
    assert state["reason"] == "signal"
    resumed = run("--resume", str(run_dir), "--steps", str(state["step"] + 800))
    assert resumed.returncode == 0, resumed.stderr
    # the run's own thread counts, and how to take the free cores instead
    assert resumed.stderr.splitlines()[0].endswith(
        "learner threads: 1, emulator threads: 1 (the run's own; --torch-threads 0 "
        "--env-threads 0 take the cores that are free)")
    assert list_checkpoints(run_dir)[-1].name > latest.name


def _deliver(number: int) -> None:
    """Send a signal to this process and let Python run its handler."""
    os.kill(os.getpid(), number)
    for _ in range(100):
        time.sleep(0.001)


def test_stop_signals_turn_a_signal_into_a_flag_and_a_second_into_an_interrupt():
    before = signal.getsignal(signal.SIGTERM)
    seen: list[int] = []
    with StopSignals(on_first=seen.append, again_stops_now=True) as stop:
        _deliver(signal.SIGTERM)
        assert stop.received == signal.SIGTERM and seen == [signal.SIGTERM]
        with pytest.raises(KeyboardInterrupt):
            _deliver(signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before
    with StopSignals() as patient:  # training: later signals change nothing
        _deliver(signal.SIGINT)
        _deliver(signal.SIGTERM)
    assert patient.received == signal.SIGINT
    entered = []  # in another thread (a study run from a caller's thread): nothing to set
    worker = threading.Thread(target=lambda: entered.append(StopSignals().__enter__()))
    worker.start()
    worker.join()
    assert entered and signal.getsignal(signal.SIGTERM) is before


def test_a_statistic_new_after_resume_gets_its_own_column(tmp_path):
    """Resumed with --torch-threads 0, a run logs torch_threads, which its first part did
    not: the header gains the column, and no row is shifted under the wrong names."""
    first = MetricsLogger(tmp_path, log_every=10)
    first.update(10, {"loss": 1.0})
    first.close(10)
    resumed = MetricsLogger(tmp_path, log_every=10, start_step=10)
    resumed.update(20, {"loss": 2.0, "torch_threads": 2.0})
    resumed.close(20)
    with (tmp_path / METRICS_FILE).open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0][0] == "step" and rows[0][-1] == "torch_threads"
    assert all(len(row) == len(rows[0]) for row in rows)
    named = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    assert [(r["step"], r["loss"], r["torch_threads"]) for r in named] == [
        ("10", "1.0", "nan"), ("20", "2.0", "2.0")]
    assert float(named[1]["steps_per_s"]) > 0 and named[1]["games"] == "0"


def test_only_the_last_checkpoints_and_the_best_are_kept(tmp_path):
    run_dir = tmp_path / "run"
    assert run(*SHORT_RUN, "--keep-checkpoints", "2", "--run-dir", str(run_dir)).returncode == 0
    names = [p.name for p in list_checkpoints(run_dir)]
    assert names[-2:] == ["step-000000002400", "step-000000003200"]
    assert len(names) <= 3


@pytest.mark.parametrize("algo", list(ALGO_OPTIONS))
def test_a_checkpoint_restores_the_learner_exactly(tmp_path, algo):
    """Without --exact-resume the games restart on resume, but the learner goes on exactly:
    the state a checkpoint holds comes back unchanged."""
    run_dir = tmp_path / "run"
    assert run(*SHORT_RUN, *ALGO_OPTIONS[algo], "--run-dir", str(run_dir)).returncode == 0
    tensors, state = load_checkpoint(list_checkpoints(run_dir)[-2])
    config = from_dict(json.loads((run_dir / CONFIG_FILE).read_text()))
    agent = make_agent(config, 4, torch.device("cpu"))
    agent.load_state(tensors, state["agent"])
    again, meta = agent.state()
    assert again.keys() == tensors.keys()
    for name in tensors:
        assert torch.equal(again[name], tensors[name]), name
    assert json.loads(json.dumps(meta)) == state["agent"]
    resumed = run("--resume", str(run_dir), "--steps", "4000")
    assert resumed.returncode == 0, resumed.stderr
    assert rows_without_timing(run_dir / METRICS_FILE)[-1]["step"] == "4000"
