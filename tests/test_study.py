"""Studies: specs checked before anything starts, and tiny studies run end to end on Ray.

The Ray tests train real (tiny) A2C runs: 2 configurations x 2 seeds of a few hundred
agent steps, each trial one process with one torch and one emulator thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from atari_rl import config as cfg
from atari_rl.checkpoints import list_checkpoints
from atari_rl.cli import build_parser, main
from atari_rl.run_files import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    EVALUATION_FILE,
    FINAL_POLICY,
    TRIAL_FILE,
)
from atari_rl.study import apply_command_line, builtin_studies, load_spec, parse_spec
from atari_rl.study_run import COPY_ENV, LOGS_DIR, run_study, steps_done, trial_status
from atari_rl.study_stats import RUNS_DIR, STUDY_FILE

TINY_OVERRIDES = ("overrides = { num_envs = 2, compile = false, log_every = 100, noop_max = 0,"
                  " n_steps = 5 }")


def tiny_spec(path: Path, steps: int = 400, seeds: str = "[0, 1]", extra: str = "",
              second: str = "", checkpoint_every: int = 200) -> Path:
    """A study TOML of two tiny A2C configurations (the second's overrides may be changed)."""
    path.write_text(f"""
name = "tiny"
steps = {steps}
games = 1
seeds = {seeds}
checkpoint_every = {checkpoint_every}
{extra}

[[configurations]]
name = "entropy-0.1"
preset = "seed-n5"
{TINY_OVERRIDES}

[[configurations]]
name = "entropy-0.01"
preset = "seed-n5"
{second or TINY_OVERRIDES.replace(" }", ", entropy_coef = 0.01 }")}
""")
    return path


def run_names(study_dir: Path) -> list[str]:
    return [t["run"] for t in json.loads((study_dir / STUDY_FILE).read_text())["trials"]]


# --- specs --------------------------------------------------------------------------------

def test_builtin_studies_load_and_follow_the_write_up():
    assert {"n-study", "write-up-entropy"} <= set(builtin_studies())
    n_study = load_spec("n-study")
    assert [c.preset for c in n_study.configurations] == [
        "seed-n5", "seed-n20", "seed-n50", "seed-n100", "seed-ninf"]
    entropy = load_spec("write-up-entropy")
    settings = {c.name: cfg.resolve(None, c.preset, c.overrides) for c in entropy.configurations}
    assert {s.n_steps for s in settings.values()} == {20, 100}
    assert sorted({s.entropy_coef for s in settings.values()}) == [0.01, 0.1]
    for config in settings.values():  # the published code: RMSprop, argmax, 0.5 x half the error
        assert (config.optimizer, config.action_selection, config.value_coef) == (
            "rmsprop", "argmax", 0.25)
    sticky = load_spec("sticky-training")
    assert sticky.protocols[0] == "sticky"  # scored where the agents differ
    assert all(t.protocols == ("sticky", "epsilon", "greedy") for t in sticky.trials())
    assert sorted(cfg.resolve(None, c.preset, c.overrides).sticky_action_prob
                  for c in sticky.configurations) == [0.0, 0.25]
    dqn = load_spec("dqn-sample-efficiency")
    assert {cfg.resolve(None, c.preset, c.overrides).algo for c in dqn.configurations} == {"dqn"}


def test_the_sample_efficient_preset_is_the_studys_dqn_3h_at_ratio_8():
    """The preset is a setting the study measures, continued for longer."""
    study = load_spec("dqn-sample-efficiency")
    measured = next(c for c in study.configurations if c.name == "dqn-3h-ratio-8")
    trial = cfg.resolve(None, measured.preset, measured.overrides)
    preset = cfg.resolve(None, "dqn-sample-efficient", {})
    differ = {field.name for field in dataclasses.fields(preset)
              if getattr(preset, field.name) != getattr(trial, field.name)}
    assert differ == {"preset", "steps"} and preset.steps > study.steps


def test_a_trials_command_line_gives_the_config_the_spec_resolves_to(tmp_path):
    spec = load_spec(str(tiny_spec(tmp_path / "tiny.toml")))
    for trial in spec.trials():
        args = build_parser().parse_args(["train", *trial.train_args(spec)])
        overrides = {k: v for k, v in vars(args).items()
                     if v is not None and k not in ("command", "algo", "preset", "run_dir",
                                                    "resume")}
        from_cli = cfg.resolve(args.algo, args.preset, overrides)
        configuration = spec.configuration(trial.configuration)
        expected = cfg.resolve(None, configuration.preset, {
            **configuration.overrides, "seed": trial.seed, "steps": trial.steps,
            "checkpoint_every": spec.checkpoint_every})
        assert from_cli == expected
        assert (from_cli.preset, from_cli.seed) == ("seed-n5", trial.seed)


@pytest.mark.parametrize(("body", "complaint"), [
    ("name = 'x'\nsteps = 10\n", "needs [[configurations]]"),
    ("colour = 'red'\n[[configurations]]\nname = 'a'\npreset = 'a2c'\n", "unknown key 'colour'"),
    ("[[configurations]]\nname = 'a'\npreset = 'nosuch'\n", "unknown preset 'nosuch'"),
    ("[[configurations]]\nname = 'a'\npreset = 'a2c'\noverrides = { entropy_coef = 'lots' }\n",
     "--entropy-coef must be float"),
    ("[[configurations]]\nname = 'a'\npreset = 'a2c'\noverrides = { frobnicate = 1 }\n",
     "--frobnicate does not apply to a2c"),
    ("[[configurations]]\nname = 'a'\npreset = 'a2c'\noverrides = { seed = 3 }\n",
     "'seed' is set by the study itself"),
    ("[[configurations]]\nname = 'a'\npreset = 'a2c'\n[[configurations]]\nname = 'a'\n"
     "preset = 'a2c'\n", "share a name"),
    ("seeds = [1, 1]\n[[configurations]]\nname = 'a'\npreset = 'a2c'\n", "different integers"),
    ("[[configurations]]\nname = 'a'\npreset = 'a2c'\noverrides = { num_envs = 0 }\n",
     "--num-envs must be at least 1"),
    ("steps = [1\n", "cannot read the study"),
    ("protocols = ['noisy']\n[[configurations]]\nname = 'a'\npreset = 'a2c'\n",
     "protocols must be a list of different evaluation protocols"),
    ("protocols = []\n[[configurations]]\nname = 'a'\npreset = 'a2c'\n",
     "protocols must be a list"),
])
def test_a_bad_spec_is_one_line_exit_2_and_nothing_started(tmp_path, capsys, body, complaint):
    spec = tmp_path / "bad.toml"
    spec.write_text(body)
    out = tmp_path / "study"
    assert main(["study", str(spec), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert complaint in err
    assert len(err.splitlines()) == 1
    assert not out.exists()


def test_bad_command_line_values_are_refused(tmp_path, capsys):
    spec = tiny_spec(tmp_path / "tiny.toml")
    for args, complaint in ((["--seeds", "0,x"], "--seeds must be integers"),
                            (["--steps", "0"], "steps must be a positive"),
                            (["--games", "0"], "games (evaluation games per trial)"),
                            (["--configurations", "entropy-0.1,nope"],
                             "has no configuration 'nope' (it has entropy-0.1, entropy-0.01)"),
                            (["--configurations", ","], "must name at least one"),
                            (["--cpus-per-trial", "0"], "--cpus-per-trial must be a positive")):
        assert main(["study", str(spec), "--out", str(tmp_path / "s"), *args]) == 2
        assert complaint in capsys.readouterr().err
    assert main(["study", "no-such-study"]) == 2
    assert "neither a TOML file nor a built-in study" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_command_line_steps_replace_a_configurations_own(tmp_path):
    spec = parse_spec({"configurations": [
        {"name": "a", "preset": "a2c", "overrides": {"steps": 5000}}]}, "x")
    assert [t.steps for t in spec.trials()] == [5000] * 3
    apply_command_line(spec, "4,5", 700, 2)
    assert [(t.seed, t.steps, t.eval_games) for t in spec.trials()] == [(4, 700, 2), (5, 700, 2)]


def test_command_line_cpus_per_trial_change_the_threads_not_the_trials():
    spec = parse_spec({"seeds": [0], "configurations": [{"name": "a", "preset": "a2c"}]}, "x")
    trials = spec.trials()
    assert spec.cpus_per_trial == 1
    apply_command_line(spec, None, None, None, cpus_per_trial=2)
    assert spec.cpus_per_trial == 2
    assert spec.trials() == trials  # a study resumed with more cores runs the same trials


def test_command_line_configurations_keep_only_those_named():
    spec = parse_spec({"seeds": [0, 1], "configurations": [
        {"name": name, "preset": "a2c"} for name in ("a", "b", "c")]}, "x")
    apply_command_line(spec, None, None, None, "c,a")
    assert [c.name for c in spec.configurations] == ["a", "c"]  # in the spec's order
    assert [t.run for t in spec.trials()] == ["a-breakout-seed0", "a-breakout-seed1",
                                              "c-breakout-seed0", "c-breakout-seed1"]
    assert spec.chooses({"configuration": "c"}) and not spec.chooses({"configuration": "b"})


# --- studies on Ray -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    """A tiny study run through Ray started on this machine: 2 configurations x 2 seeds."""
    root = tmp_path_factory.mktemp("study")
    out = root / "study"
    lines: list[str] = []
    spec = tiny_spec(root / "tiny.toml", extra='protocols = ["greedy", "epsilon"]')
    code = run_study(load_spec(str(spec)), out, None, summary_every_s=5.0, write=lines.append)
    return out, code, lines


def test_a_study_runs_every_trial_and_aggregates(finished_study):
    out, code, lines = finished_study
    assert code == 0, lines
    runs = run_names(out)
    assert runs == ["entropy-0.1-breakout-seed0", "entropy-0.1-breakout-seed1",
                    "entropy-0.01-breakout-seed0", "entropy-0.01-breakout-seed1"]
    for run in runs:
        run_dir = out / RUNS_DIR / run
        assert trial_status(out, run) == "finished"
        config = json.loads((run_dir / CONFIG_FILE).read_text())
        assert (config["preset"], config["seed"]) == ("seed-n5", int(run[-1]))
        assert config["entropy_coef"] == (0.1 if run.startswith("entropy-0.1-") else 0.01)
        assert config["torch_threads"] == config["env_threads"] == 1  # cpus_per_trial
        trial = json.loads((run_dir / TRIAL_FILE).read_text())
        evaluation = json.loads((run_dir / EVALUATION_FILE).read_text())
        assert trial["score"] == evaluation["mean"] and evaluation["games"] == 1
        assert list(evaluation["protocols"]) == ["greedy", "epsilon"]  # the first is the score
        assert evaluation["protocols"]["greedy"]["mean"] == evaluation["mean"]
        assert Path(trial["log"]) == out / LOGS_DIR / f"{run}.log"
        assert "atari-rl train --run-dir" in Path(trial["log"]).read_text()
    aggregate = json.loads((out / "aggregate.json").read_text())
    assert {(r["configuration"], r["num_seeds"]) for r in aggregate["results"]} == {
        ("entropy-0.1", 2), ("entropy-0.01", 2)}
    assert sum(line.startswith("started ") for line in lines) == 4
    assert sum(line.startswith("finished ") for line in lines) == 4
    assert any(line.startswith("study: 4/4 trials finished") for line in lines)


def test_run_directories_of_a_study_work_with_every_command(finished_study, tmp_path):
    out, _, _ = finished_study
    run_dir = out / RUNS_DIR / run_names(out)[0]
    assert main(["plot", str(run_dir), "--out", str(tmp_path / "figures")]) == 0
    assert main(["report", str(run_dir), "--out", str(tmp_path / "run.html")]) == 0
    assert main(["report", str(out), "--out", str(tmp_path / "study.html")]) == 0
    page = (tmp_path / "study.html").read_text()
    assert "entropy-0.01" in page and "IQM" in page
    assert main(["plot", str(out), "--out", str(tmp_path / "study-figures")]) == 0
    assert list((tmp_path / "study-figures").glob("*.png"))


def test_running_a_finished_study_again_redoes_nothing(finished_study):
    out, _, _ = finished_study
    stamps = {run: (out / RUNS_DIR / run / TRIAL_FILE).stat().st_mtime_ns
              for run in run_names(out)}
    lines: list[str] = []
    assert run_study(load_spec(str(out.parent / "tiny.toml")), out, None,
                     write=lines.append) == 0
    assert not any(line.startswith("started ") for line in lines)
    assert stamps == {run: (out / RUNS_DIR / run / TRIAL_FILE).stat().st_mtime_ns
                      for run in run_names(out)}


def test_other_settings_in_the_same_study_directory_are_refused(finished_study, capsys):
    out, _, _ = finished_study
    assert main(["study", str(out.parent / "tiny.toml"), "--out", str(out),
                 "--steps", "600"]) == 2
    assert "with other settings" in capsys.readouterr().err


def test_a_study_runs_only_the_configurations_named(tmp_path, capsys):
    """--configurations: a second seed for some settings of a long study, say; the other
    configurations get no trial and nothing of theirs starts."""
    spec = tiny_spec(tmp_path / "tiny.toml", seeds="[0]")
    out = tmp_path / "study"
    assert main(["study", str(spec), "--out", str(out), "--configurations", "entropy-0.01"]) == 0
    assert run_names(out) == ["entropy-0.01-breakout-seed0"]
    assert trial_status(out, "entropy-0.01-breakout-seed0") == "finished"
    assert not (out / RUNS_DIR / "entropy-0.1-breakout-seed0").exists()
    started = [line for line in capsys.readouterr().err.splitlines()
               if line.startswith("started")]
    assert started == ["started  entropy-0.01-breakout-seed0"]


def test_a_failing_trial_does_not_stop_the_others(tmp_path):
    """A setting the node cannot honour (CUDA on a CPU machine) fails its trials alone."""
    second = TINY_OVERRIDES.replace(" }", ", device = 'cuda' }")
    spec = load_spec(str(tiny_spec(tmp_path / "tiny.toml", seeds="[0]", second=second)))
    lines: list[str] = []
    out = tmp_path / "study"
    assert run_study(spec, out, None, write=lines.append) == 1
    assert trial_status(out, "entropy-0.1-breakout-seed0") == "finished"
    failed = json.loads((out / RUNS_DIR / "entropy-0.01-breakout-seed0" / TRIAL_FILE)
                        .read_text())
    assert failed["status"] == "failed"
    assert failed["error"].startswith("atari-rl: error: --device cuda")
    assert Path(failed["log"]).is_file()
    failure = [line for line in lines if line.startswith("FAILED")]
    assert len(failure) == 1 and "--device cuda" in failure[0] and failed["log"] in failure[0]
    assert "1 of 2 trials did not finish" in lines[-1]


def test_a_killed_study_resumes_without_redoing_finished_trials(tmp_path, capsys):
    """SIGKILL to the whole study (Ray included) part-way; `atari-rl study STUDY_DIR`
    finishes it."""
    spec = tiny_spec(tmp_path / "tiny.toml", steps=8000, seeds="[0]", checkpoint_every=1000,
                     second=TINY_OVERRIDES.replace(" }", ", steps = 200 }"))
    out = tmp_path / "study"
    command = [sys.executable, "-m", "atari_rl.cli", "study", str(spec), "--out", str(out)]
    study = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    long_run, short_run = "entropy-0.1-breakout-seed0", "entropy-0.01-breakout-seed0"
    deadline = time.monotonic() + 240
    try:
        while not (trial_status(out, short_run) == "finished"
                   and list((out / RUNS_DIR / long_run / CHECKPOINT_DIR).glob("step-*"))):
            assert time.monotonic() < deadline, "the study made no progress"
            assert study.poll() is None, "the study ended before it was killed"
            time.sleep(0.5)
    finally:
        os.killpg(study.pid, signal.SIGKILL)
        study.wait()
        kill_processes_of(out)  # the trials' processes too, as when the machine goes down
    assert not (out / RUNS_DIR / long_run / FINAL_POLICY).exists(), "killed too late"
    short_log = (out / LOGS_DIR / f"{short_run}.log").read_text()
    capsys.readouterr()
    assert main(["study", str(out)]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert any(line.startswith(f"started  {long_run}, resuming at step") for line in lines)
    assert not any(short_run in line for line in lines if line.startswith("started"))
    assert (out / LOGS_DIR / f"{short_run}.log").read_text() == short_log
    assert f"train --resume {out.resolve() / RUNS_DIR / long_run}" in (
        out / LOGS_DIR / f"{long_run}.log").read_text()
    config = json.loads((out / RUNS_DIR / long_run / CONFIG_FILE).read_text())
    assert config["steps"] == 8000 and trial_status(out, long_run) == "finished"


@pytest.mark.parametrize("how", ["SIGTERM to the driver", "Ctrl-C"])
def test_a_stopped_study_checkpoints_its_trials_and_says_how_to_resume(tmp_path, how):
    """A cluster's scheduler sends SIGTERM to the command; a terminal's Ctrl-C sends SIGINT
    to its whole process group. Either way each running trial checkpoints at the step it
    reached, nothing is marked failed, and the command ends with one line and 128 + the
    signal."""
    # 4 trials on 2 CPUs: two wait, and start after the stop only to end at once
    spec = tiny_spec(tmp_path / "tiny.toml", steps=200_000, seeds="[0, 1]", checkpoint_every=1000)
    out = tmp_path / "study"
    command = [sys.executable, "-m", "atari_rl.cli", "study", str(spec), "--out", str(out)]
    study = subprocess.Popen(command, start_new_session=True, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)

    def started() -> list[str]:
        return [run for run in ("entropy-0.1-breakout-seed0", "entropy-0.1-breakout-seed1",
                                "entropy-0.01-breakout-seed0", "entropy-0.01-breakout-seed1")
                if list_checkpoints(out / RUNS_DIR / run)]

    number = signal.SIGTERM if how.startswith("SIGTERM") else signal.SIGINT
    deadline = time.monotonic() + 240
    try:
        while len(started()) < 2:
            assert time.monotonic() < deadline, "the study made no progress"
            assert study.poll() is None, "the study ended before it was stopped"
            time.sleep(0.5)
        if number == signal.SIGTERM:
            study.send_signal(number)
        else:
            os.killpg(study.pid, number)
        output, _ = study.communicate(timeout=120)
    finally:
        if study.poll() is None:
            os.killpg(study.pid, signal.SIGKILL)
            study.wait()
        kill_processes_of(out)
    lines = output.splitlines()
    runs = started()
    assert study.returncode == 128 + number, output
    assert lines[-1] == (f"study stopped by {number.name}, 4 of 4 trials not finished: run "
                         f"the same command again to resume them")
    assert "Traceback" not in output and "received" not in output, output  # Ray's C++ dump
    assert len(runs) == 2 and "Last result" not in output, output  # the waiting two: silent
    assert sum(line.startswith("started") for line in lines) == 2, output
    assert not any(line.startswith("FAILED") for line in lines), output
    for run in runs:
        run_dir = out / RUNS_DIR / run
        last_line = (out / LOGS_DIR / f"{run}.log").read_text().splitlines()[-1]
        assert last_line.startswith("atari-rl: stopped by SIGTERM at step "), last_line
        step = int(last_line.split(" at step ")[1].split(";")[0].replace(",", ""))
        assert steps_done(run_dir) == step
        assert f"stopped  {run} at step {step:,}, checkpointed" in lines
        assert trial_status(out, run) == "pending" and not (run_dir / TRIAL_FILE).exists()


def kill_processes_of(study_dir: Path) -> None:
    """SIGKILL every process whose command line names the study directory."""
    import psutil

    for process in psutil.process_iter(["cmdline"]):
        if any(str(study_dir) in part for part in process.info["cmdline"] or []):
            with contextlib.suppress(psutil.Error):
                process.kill()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_study_runs_on_a_ray_cluster_through_its_address(tmp_path, monkeypatch):
    """`ray start --head` on this machine stands for a cluster; the trials send their files
    through the driver's store (COPY_ENV), as on nodes that cannot see the study directory."""
    ray_bin = Path(sys.executable).with_name("ray")
    port = _free_port()
    temp_dir = Path("/tmp") / f"rayt{os.getpid()}"
    head = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
         "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir}"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        monkeypatch.setenv(COPY_ENV, "1")
        spec = load_spec(str(tiny_spec(tmp_path / "tiny.toml", seeds="[0]")))
        out = tmp_path / "study"
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while True:  # the head takes a few seconds to accept drivers
            try:
                code = run_study(spec, out, f"127.0.0.1:{port}", write=lines.append)
                break
            except ValueError:
                assert time.monotonic() < deadline, "the Ray head did not start"
                time.sleep(2)
        assert code == 0, lines
        for run in run_names(out):
            run_dir = out / RUNS_DIR / run
            assert trial_status(out, run) == "finished"
            assert (run_dir / EVALUATION_FILE).is_file()
            assert (run_dir / FINAL_POLICY).is_file()
            assert [p.name for p in (run_dir / CHECKPOINT_DIR).glob("step-*")] == [
                "step-000000000200", "step-000000000400"]
            assert "atari-rl evaluate" in (out / LOGS_DIR / f"{run}.log").read_text()
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
