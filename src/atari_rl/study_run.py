"""Running a study on Ray: on this machine, or on a cluster's nodes, with one command.

Ray Tune schedules the trials: each declares its CPUs (and a GPU share where the cluster
has GPUs), and Ray packs them onto the cores of the machines it has. A trial is the two
commands a user would type, `atari-rl train` then `atari-rl evaluate`, run as a child
process whose output goes to the trial's log. A trial that crashes, stops on a cliff or is
given a setting its node cannot honour (CUDA on a CPU node) fails alone, with its error
line and log, and the others go on.

Where the results go: a trial writes straight into the study directory when its node sees
it (this machine, or a filesystem shared by the nodes). On a cluster without one, the
trial trains in a scratch directory of its node and sends each new checkpoint, and its
final files, to a small Ray actor on the machine that ran the command, which writes them
into the study directory; a trial resumed on another node gets its run directory back
from there. Tune's own checkpoint syncing cannot do this: since Ray 2.7 it needs cloud
storage or NFS.

Resume: a trial is finished when its run directory holds trial.json with status
"finished". Running the command again skips those, resumes the others from their last
checkpoint (`atari-rl train --resume`) and retries the failed ones.

Stopping: Ctrl-C, or the SIGTERM a cluster's scheduler sends at a job's time limit, asks
every running trial to stop its training the way `atari-rl train` stops on its own: with a
checkpoint at the step it had reached. Left to Ray, a stopped trial's process would be
killed, and a DQN trial would lose up to a checkpoint period of work (15 minutes here). A
second signal stops at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import fcntl
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from atari_rl.checkpoints import atomic_write, list_checkpoints, read_json, write_json
from atari_rl.metrics import format_duration
from atari_rl.run_files import (
    CHECKPOINT_DIR,
    EVALUATION_FILE,
    FINAL_POLICY,
    METRICS_FILE,
    TRIAL_FILE,
)
from atari_rl.stop_signals import StopSignals
from atari_rl.study import DEFAULT_PROTOCOLS, StudySpec, Trial, spec_from_dict
from atari_rl.study_stats import RUNS_DIR, STUDY_FILE

LOGS_DIR = "logs"  # one log per trial, beside runs/: a run directory holds only what a run writes
TUNE_DIR = ".tune"  # Tune's own experiment state
# "1": trials copy their files through the driver's actor even where they could write the
# study directory themselves: the cluster path, exercised on one machine by the tests.
COPY_ENV = "ATARI_RL_STUDY_COPY"
FORMAT = 1
POLL_S = 2.0
SOME_FAILED = 1


class _StudyStopped(Exception):
    """The driver asked the trials to stop (Ctrl-C or SIGTERM): checkpoint and end."""


# --- the study directory ----------------------------------------------------------------

def plan(spec: StudySpec, study_dir: Path) -> dict[str, Any]:
    """The study.json of a new study directory, or of an existing one that ran the same
    trials; nothing is written yet.

    Running again with more seeds or configurations adds trials; a trial that exists with
    other settings (another --steps, say) is refused: its results would mix two studies.
    """
    trials = {t.run: dataclasses.asdict(t) for t in spec.trials()}
    configurations = {c.name: dataclasses.asdict(c) for c in spec.configurations}
    path = study_dir / STUDY_FILE
    if path.is_file():
        old = read_json(path)
        for trial in old["trials"]:
            run = trial["run"]
            if run in trials and _signature(trials[run], configurations) != _signature(
                    trial, {c["name"]: c for c in old["configurations"]}):
                raise ValueError(f"{study_dir} ran trial {run} with other settings: run the "
                                 f"study with its earlier settings, or choose another --out")
            trials.setdefault(run, trial)
        for configuration in old["configurations"]:
            configurations.setdefault(configuration["name"], configuration)
        study_id = old["id"]
    else:
        if study_dir.exists() and (not study_dir.is_dir() or any(study_dir.iterdir())):
            raise ValueError(f"{study_dir} exists and is not a study directory: choose "
                             f"another --out")
        study_id = uuid.uuid4().hex
    record = {"format": FORMAT, "id": study_id, "name": spec.name,
              "description": spec.description, "spec": spec.to_dict(),
              "configurations": list(configurations.values()), "trials": list(trials.values())}
    return record


def _signature(trial: dict[str, Any], configurations: dict[str, dict[str, Any]]) -> str:
    configuration = configurations[trial["configuration"]]
    return json.dumps([trial["game"], trial["seed"], trial["steps"], trial["eval_games"],
                       trial.get("protocols", list(DEFAULT_PROTOCOLS)),  # not in older studies
                       configuration["preset"], configuration["overrides"]], sort_keys=True)


def trial_status(study_dir: Path, run: str) -> str:
    """finished, failed, or pending (never started, interrupted, or still running)."""
    path = study_dir / RUNS_DIR / run / TRIAL_FILE
    return read_json(path).get("status", "pending") if path.is_file() else "pending"


def steps_done(run_dir: Path) -> int:
    """Agent steps a trial will not redo: those of its last checkpoint."""
    checkpoints = list_checkpoints(run_dir)
    return int(checkpoints[-1].name.split("-")[1]) if checkpoints else 0


# --- one trial, on whichever node Ray puts it -------------------------------------------

@dataclasses.dataclass
class TrialTask:
    """What a trial needs to know, sent to its node."""

    study_dir: str  # as the driver sees it
    study_id: str
    store: str  # the name of the driver's file-store actor
    trial: dict[str, Any]
    train_args: list[str]
    cpus: int
    copy: bool  # send files through the store even where the study directory is visible


def run_trial(config: dict[str, Any]) -> None:
    """The Tune trainable: train (or resume), evaluate, write trial.json. Never raises for
    a failure of the run itself: that is recorded in trial.json and the trial ends."""
    _TrialRunner(TrialTask(**config["task"])).run()


class _TrialRunner:
    def __init__(self, task: TrialTask):
        self.task = task
        self.trial = Trial(**task.trial)
        self.study_dir = Path(task.study_dir)
        self.log_path = self.study_dir / LOGS_DIR / f"{self.trial.run}.log"
        self.local = not task.copy and _sees(self.study_dir, task.study_id)
        if self.local:
            self.root = self.study_dir
        else:
            self.root = Path(tempfile.gettempdir()) / "atari-rl-studies" / task.study_id
        self.run_dir = self.root / RUNS_DIR / self.trial.run
        self.local_log = self.root / LOGS_DIR / f"{self.trial.run}.log"
        self.store: Any = None
        self._synced: dict[str, tuple[int, int]] = {}

    def run(self) -> None:
        import ray

        self.store = ray.get_actor(self.task.store)
        self.run_dir.parent.mkdir(parents=True, exist_ok=True)
        self.local_log.parent.mkdir(parents=True, exist_ok=True)
        lock = self.run_dir.parent / f".{self.trial.run}.lock"
        with _exclusive(lock) as lock_fd:
            if self._stop_requested():  # started after the stop, only to end at once
                from ray import tune

                # one result, or Tune prints "Trial ... completed. Last result:" for it
                tune.report({"step": steps_done(self.run_dir), "phase": "stopped"})
                return
            if not self.local:
                self._unpack(ray.get(self.store.files.remote(self.trial.run)))
            # how an earlier attempt ended no longer holds while this one runs
            (self.run_dir / TRIAL_FILE).unlink(missing_ok=True)
            started = time.perf_counter()
            try:
                error = self._train(lock_fd)
                train_seconds = time.perf_counter() - started
                if error is None:
                    error = self._evaluate(lock_fd)
            except _StudyStopped:  # no trial.json: the trial is pending, and resumes
                if not self.local:
                    self._ship()
                return
            self._finish(error, train_seconds)

    def _stop_requested(self) -> bool:
        import ray

        return ray.get(self.store.stopping.remote())

    def _train(self, lock_fd: int) -> str | None:
        trial, threads = self.trial, str(self.task.cpus)
        threads_args = ["--torch-threads", threads, "--env-threads", threads]
        if list_checkpoints(self.run_dir):
            if (self.run_dir / FINAL_POLICY).is_file() and steps_done(self.run_dir) >= trial.steps:
                return None
            command = ["train", "--resume", str(self.run_dir), "--steps", str(trial.steps),
                       *threads_args]
        else:  # never started, or killed before its first checkpoint: start over
            shutil.rmtree(self.run_dir, ignore_errors=True)
            command = ["train", "--run-dir", str(self.run_dir), *self.task.train_args,
                       *threads_args]
        return self._command(command, lock_fd, phase="training")

    def _evaluate(self, lock_fd: int) -> str | None:
        return self._command(["evaluate", str(self.run_dir),
                              "--protocols", ",".join(self.trial.protocols),
                              "--games", str(self.trial.eval_games), "--seed", str(self.trial.seed),
                              "--env-threads", str(self.task.cpus)], lock_fd, phase="evaluating")

    def _command(self, args: list[str], lock_fd: int, phase: str) -> str | None:
        """Run one atari-rl command, reporting progress to Tune; the error line or None.
        _StudyStopped once the command has stopped (with a checkpoint, for training) because
        the study was stopped."""
        from ray import tune

        if self._stop_requested():
            raise _StudyStopped
        command = [sys.executable, "-m", "atari_rl.cli", *args]
        with self.local_log.open("a") as log:
            log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} on {socket.gethostname()}: "
                      f"atari-rl {' '.join(args)}\n")
            log.flush()
            start = log.tell()
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"}, pass_fds=(lock_fd,),
                preexec_fn=_die_with_parent)
            checkpoints = self._checkpoint_names()
            while process.poll() is None:
                time.sleep(POLL_S)
                if self._stop_requested():
                    process.send_signal(signal.SIGTERM)  # training checkpoints, then exits
                    process.wait()
                    raise _StudyStopped
                row = _last_metrics(self.run_dir)
                tune.report({"step": self._step(phase, row), "phase": phase, **row})
                if not self.local and (latest := self._checkpoint_names()) != checkpoints:
                    checkpoints = latest
                    self._ship()
        if process.returncode == 0:
            return None
        return _error_line(self.local_log, start) or f"atari-rl {args[0]} exited with code " \
                                                       f"{process.returncode}"

    def _step(self, phase: str, row: dict[str, float]) -> int:
        """Agent steps done: the last metrics row's, else the last checkpoint's."""
        if phase != "training":
            return self.trial.steps
        return int(row.get("metrics_step", steps_done(self.run_dir)))

    def _finish(self, error: str | None, train_seconds: float) -> None:
        """trial.json: how the trial ended (train_seconds: this attempt's training)."""
        evaluation = self.run_dir / EVALUATION_FILE
        score = read_json(evaluation)["mean"] if error is None and evaluation.is_file() else None
        record = {"status": "finished" if error is None else "failed",
                  **{k: v for k, v in dataclasses.asdict(self.trial).items() if k != "run"},
                  "score": score, "error": error, "log": str(self.log_path),
                  "train_seconds": round(train_seconds, 1), "node": socket.gethostname()}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.run_dir / TRIAL_FILE, record)
        if not self.local:
            self._ship()
            shutil.rmtree(self.run_dir, ignore_errors=True)

    # copying through the driver's store, for nodes that do not see the study directory

    def _checkpoint_names(self) -> list[str]:
        return [p.name for p in list_checkpoints(self.run_dir)]

    def _ship(self) -> None:
        """Send what changed since the last call (and what was deleted) to the store."""
        import ray

        current = _file_stats(self.run_dir)
        changed = {rel: (self.run_dir / rel).read_bytes() for rel, stat in current.items()
                   if self._synced.get(rel) != stat}
        deleted = sorted(set(self._synced) - set(current))
        ray.get(self.store.put.remote(self.trial.run, changed, deleted,
                                      self.local_log.read_bytes()))
        self._synced = current

    def _unpack(self, files: dict[str, bytes]) -> None:
        shutil.rmtree(self.run_dir, ignore_errors=True)
        for rel, data in files.items():
            path = self.run_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        self._synced = _file_stats(self.run_dir)


class StudyStore:
    """A Ray actor on the driver's machine that writes the trials' files into the study
    directory, for nodes that cannot see it (a checkpoint directory appears whole or not at
    all, as on the trial's own disk), and tells every trial when the study is stopped."""

    def __init__(self, study_dir: str):
        self.study_dir = Path(study_dir)
        self._stopping = False

    def stop(self) -> None:
        """The driver got Ctrl-C or SIGTERM: every trial checkpoints and ends."""
        self._stopping = True

    def stopping(self) -> bool:
        return self._stopping

    def files(self, run: str) -> dict[str, bytes]:
        run_dir = self.study_dir / RUNS_DIR / run
        return {rel: (run_dir / rel).read_bytes() for rel in _file_stats(run_dir)}

    def put(self, run: str, files: dict[str, bytes], deleted: list[str], log: bytes) -> None:
        run_dir = self.study_dir / RUNS_DIR / run
        checkpoints: dict[str, dict[str, bytes]] = {}
        for rel, data in files.items():
            parts = Path(rel).parts
            if len(parts) == 3 and parts[0] == CHECKPOINT_DIR:
                checkpoints.setdefault(parts[1], {})[parts[2]] = data
            else:
                atomic_write(run_dir / rel, lambda p, data=data: p.write_bytes(data))
        for name, contents in checkpoints.items():
            final = run_dir / CHECKPOINT_DIR / name
            temporary = final.with_name(f".tmp-{name}")
            shutil.rmtree(temporary, ignore_errors=True)
            if final.is_dir():  # add to what is there (a rewritten file is sent alone)
                shutil.copytree(final, temporary)
            temporary.mkdir(parents=True, exist_ok=True)
            for filename, data in contents.items():
                (temporary / filename).write_bytes(data)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(temporary, final)
        for rel in deleted:
            (run_dir / rel).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                (run_dir / rel).parent.rmdir()  # an emptied checkpoint directory
        atomic_write(self.study_dir / LOGS_DIR / f"{run}.log", lambda p: p.write_bytes(log))


def _file_stats(root: Path) -> dict[str, tuple[int, int]]:
    """Relative path -> (size, mtime) of a run directory's finished files (no temporaries)."""
    if not root.is_dir():
        return {}
    stats = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            stat = path.stat()
            stats[str(rel)] = (stat.st_size, stat.st_mtime_ns)
    return stats


def _sees(study_dir: Path, study_id: str) -> bool:
    try:
        return read_json(study_dir / STUDY_FILE)["id"] == study_id
    except (OSError, ValueError, KeyError):
        return False


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[int]:
    """Hold a lock on a trial while it runs. Its training process inherits the lock, so a
    trial started again at once waits for a killed attempt's process to write its final
    checkpoint and exit."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def _die_with_parent() -> None:
    """In the child: SIGTERM when the Ray worker dies, so the run checkpoints and stops
    instead of training on unseen (PR_SET_PDEATHSIG, Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    os.setpgrp()  # and not the terminal's Ctrl-C: the trial stops it itself


def _last_metrics(run_dir: Path) -> dict[str, float]:
    """The last row of metrics.csv: steps, speed and scores, for the progress lines."""
    path = run_dir / METRICS_FILE
    try:
        with path.open("rb") as handle:
            header = handle.readline().decode().strip().split(",")
            handle.seek(max(handle.seek(0, os.SEEK_END) - 4096, 0))
            last = handle.read().decode(errors="replace").strip().splitlines()[-1].split(",")
    except (OSError, IndexError):
        return {}
    if len(last) != len(header) or last == header:
        return {}
    row = dict(zip(header, last, strict=True))
    result = {}
    for key, name in (("step", "metrics_step"), ("steps_per_s", "steps_per_s"),
                      ("score_mean100", "score_mean100")):
        with contextlib.suppress(KeyError, ValueError):
            value = float(row[key])
            if math.isfinite(value):
                result[name] = value
    return result


def _error_line(log: Path, start: int) -> str | None:
    """The line that says what went wrong: atari-rl's own one-line error, else the last line
    (a traceback's exception)."""
    with log.open("rb") as handle:
        handle.seek(start)
        lines = [line.strip() for line in handle.read().decode(errors="replace").splitlines()
                 if line.strip()]
    for line in reversed(lines):
        if line.startswith("atari-rl: "):
            return line
    return lines[-1] if lines else None


# --- the driver ---------------------------------------------------------------------------

class _Progress:
    """A line when a trial starts or ends, and a summary every `every_s` seconds."""

    def __init__(self, study_dir: Path, trials: list[Trial], done: dict[str, int],
                 every_s: float, write: Callable[[str], None]):
        self.study_dir = study_dir
        self.trials = {t.run: t for t in trials}
        self.steps = dict(done)  # run -> agent steps done, counting earlier attempts
        self.start_steps = sum(done.values())
        self.total = sum(t.steps for t in trials)
        self.started = time.perf_counter()
        self.every_s = every_s
        self.next_summary = self.started + every_s
        self.running: set[str] = set()
        self.announced: set[str] = set()  # started before any stop
        self.ended: dict[str, str] = {}  # run -> finished, failed or stopped
        self.write = write
        self.stopping = False

    def stop(self, signal_name: str) -> None:
        self.stopping = True
        self.write(f"{signal_name}: stopping the study; each running trial writes a "
                   f"checkpoint first (the same signal again stops at once)")

    def trial_started(self, run: str) -> None:
        self.running.add(run)
        if self.stopping:  # Tune starts the waiting trials, which end at once
            return
        self.announced.add(run)
        resumed = f", resuming at step {self.steps[run]:,}" if self.steps.get(run) else ""
        self.write(f"started  {run}{resumed}")

    def trial_result(self, run: str, result: dict[str, Any]) -> None:
        if "step" in result:
            self.steps[run] = max(self.steps.get(run, 0), int(result["step"]))
        self.maybe_summary()

    def trial_ended(self, run: str, ray_error: str | None = None) -> None:
        self.running.discard(run)
        path = self.study_dir / RUNS_DIR / run / TRIAL_FILE
        record = read_json(path) if path.is_file() else {}
        if not record and self.stopping and ray_error is None:
            self.ended[run] = "stopped"
            if run in self.announced:
                steps = steps_done(self.study_dir / RUNS_DIR / run)
                self.write(f"stopped  {run} at step {steps:,}, checkpointed")
            return
        status = record.get("status", "failed")
        self.ended[run] = status
        if status == "finished":
            self.steps[run] = self.trials[run].steps
            self.write(f"finished {run}: evaluation mean {record['score']:.1f} over "
                       f"{self.trials[run].eval_games} games")
        else:
            error = record.get("error") or ray_error or "the trial ended without a result"
            log = record.get("log", self.study_dir / LOGS_DIR / f"{run}.log")
            self.write(f"FAILED   {run}: {error} (log: {log})")
        self.maybe_summary(force=not self.running and len(self.ended) == len(self.trials))

    def maybe_summary(self, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now < self.next_summary:
            return
        self.next_summary = now + self.every_s
        done = sum(min(s, self.trials[r].steps) for r, s in self.steps.items() if r in self.trials)
        rate = (done - self.start_steps) / max(now - self.started, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else math.inf
        finished = sum(s == "finished" for s in self.ended.values())
        failed = sum(s == "failed" for s in self.ended.values())
        self.write(f"study: {finished}/{len(self.trials)} trials finished, {failed} failed, "
                   f"{len(self.running)} running | {done:,}/{self.total:,} agent steps | "
                   f"{rate:,.0f} steps/s over all trials | ETA {format_duration(eta)}")


def _tune_callback(progress: _Progress) -> Any:
    from ray import tune

    class Callback(tune.Callback):
        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            progress.trial_started(_run_of(trial))

        def on_trial_result(self, iteration: int, trials: list, trial: Any,
                            result: dict[str, Any], **info: Any) -> None:
            progress.trial_result(_run_of(trial), result)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any,
                              **info: Any) -> None:
            progress.trial_ended(_run_of(trial))

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            error = trial.get_error() if hasattr(trial, "get_error") else None
            line = str(error).strip().splitlines()[-1] if error else None
            progress.trial_ended(_run_of(trial), line)

    return Callback()


def _run_of(trial: Any) -> str:
    return trial.config["task"]["trial"]["run"]


def run_study(spec: StudySpec, study_dir: Path, address: str | None = None,
              summary_every_s: float = 30.0,
              write: Callable[[str], None] | None = None) -> int:
    """Run every unfinished trial of the spec's configurations on Ray (the study directory
    may hold others, left as they are); 0 when all finished, 1 when some failed, 128 + the
    signal's number when Ctrl-C or SIGTERM stopped it. ValueError (one line) for what can be
    refused before any trial starts."""
    write = write or (lambda line: print(line, file=sys.stderr, flush=True))
    study_dir = study_dir.resolve()
    record = plan(spec, study_dir)
    trials = [Trial(**t) for t in record["trials"] if spec.chooses(t)]
    pending = [t for t in trials if trial_status(study_dir, t.run) != "finished"]
    stopped_by = None
    if pending:
        stopped_by = _run_on_ray(spec, record, study_dir, pending, address, summary_every_s,
                                 write)
    else:
        write_json(study_dir / STUDY_FILE, record)
        write(f"study {spec.name} in {study_dir}: all {len(trials)} trials finished before")
    _write_aggregate(study_dir, write)
    left = [t.run for t in trials if trial_status(study_dir, t.run) != "finished"]
    if stopped_by is not None:
        write(f"study stopped by {signal.Signals(stopped_by).name}, {len(left)} of "
              f"{len(trials)} trials not finished: run the same command again to resume them")
        return 128 + stopped_by
    failed = left
    if failed:
        write(f"{len(failed)} of {len(trials)} trials did not finish ({', '.join(failed)}): "
              f"their errors are above and in {TRIAL_FILE}; run the same command again to "
              f"retry them")
        return SOME_FAILED
    write(f"all {len(trials)} trials finished: atari-rl report {study_dir}")
    return 0


def _run_on_ray(spec: StudySpec, record: dict[str, Any], study_dir: Path,
                pending: list[Trial], address: str | None, summary_every_s: float,
                write: Callable[[str], None]) -> int | None:
    """Connect to Ray and check what the trials ask of it, then write study.json (so a
    refused study leaves nothing behind), then run the trials. The signal that stopped the
    study, or None."""
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # _stop_trials handles Ctrl-C
    import ray
    from ray import tune
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    _connect(address)
    try:
        resources = ray.cluster_resources()
        cpus, gpus = resources.get("CPU", 0), resources.get("GPU", 0)
        if spec.cpus_per_trial > cpus:
            raise ValueError(f"each trial asks for {spec.cpus_per_trial} CPUs and the Ray "
                             f"cluster has {cpus:g}: lower cpus_per_trial (or --cpus-per-trial)")
        gpu_share = spec.gpus_per_trial
        if gpu_share is None:
            gpu_share = gpus * spec.cpus_per_trial / cpus if gpus else 0.0
        if gpu_share > 0 and not gpus:
            raise ValueError(f"each trial asks for {gpu_share:g} GPU and the Ray cluster has "
                             f"none: set gpus_per_trial = 0")
        study_dir.mkdir(parents=True, exist_ok=True)
        write_json(study_dir / STUDY_FILE, record)
        trials = len(record["trials"])
        left = sum(not spec.chooses(t) for t in record["trials"])
        write(f"study {spec.name} in {study_dir}: {trials} trials, {len(pending)} to run"
              + (f", {left} of other configurations left as they are" if left else ""))
        write(f"Ray: {cpus:g} CPUs, {gpus:g} GPUs; each trial takes {spec.cpus_per_trial} "
              f"CPU(s){f' and {gpu_share:.3g} GPU' if gpu_share else ''}")
        study_id = record["id"]
        spec_all = spec_from_dict({**record["spec"], "configurations": record["configurations"]})
        store_name = f"atari-rl-store-{study_id}"
        store = ray.remote(StudyStore).options(
            name=store_name, num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
                ray.get_runtime_context().get_node_id(), soft=False)).remote(str(study_dir))
        copy = os.environ.get(COPY_ENV) == "1"
        tasks = [dataclasses.asdict(TrialTask(
            study_dir=str(study_dir), study_id=study_id, store=store_name,
            trial=dataclasses.asdict(t), train_args=t.train_args(spec_all),
            cpus=spec.cpus_per_trial, copy=copy)) for t in pending]
        done = {t.run: steps_done(study_dir / RUNS_DIR / t.run) for t in pending}
        progress = _Progress(study_dir, pending, done, summary_every_s, write)
        resources_per_trial = {"cpu": spec.cpus_per_trial, "gpu": gpu_share}
        tuner = tune.Tuner(
            tune.with_resources(run_trial, resources_per_trial),
            param_space={"task": tune.grid_search(tasks)},
            tune_config=tune.TuneConfig(
                reuse_actors=False, trial_name_creator=_run_of, trial_dirname_creator=_run_of),
            run_config=tune.RunConfig(
                name=time.strftime("attempt-%Y%m%d-%H%M%S"),
                storage_path=str(study_dir / TUNE_DIR), verbose=0,
                callbacks=[_tune_callback(progress)],
                # a node lost mid-trial: Tune starts the trial again elsewhere, and it
                # resumes from its last checkpoint
                failure_config=tune.FailureConfig(max_failures=2)))
        with StopSignals(on_first=lambda number: _stop_trials(store, progress, number),
                         again_stops_now=True) as stop:
            tuner.fit()
        ray.kill(store)
        return stop.received
    finally:
        ray.shutdown()


def _stop_trials(store: Any, progress: _Progress, number: int) -> None:
    """Ctrl-C or SIGTERM while the trials run: ask each to checkpoint and end (through the
    store, which every trial polls); Tune ends as its trials return. Without this, Ray's
    own SIGTERM handler would print a C++ stack and end the driver, and Ray would kill the
    trials' processes."""
    progress.stop(signal.Signals(number).name)
    # in a thread: a Ray call from inside a signal handler could wait on a lock that the
    # interrupted main thread holds
    threading.Thread(target=store.stop.remote, daemon=True).start()


def _connect(address: str | None) -> None:
    import logging

    import ray

    try:
        # ERROR: Ray's warnings (token authentication, Tune's result files that this study
        # does not use) would bury the trials' lines
        # "local": a new Ray of this machine's own, even where another study's Ray runs here
        ray.init(address=address or "local", include_dashboard=False, logging_level=logging.ERROR,
                 log_to_driver=False, configure_logging=True)
        logging.getLogger("ray.tune").setLevel(logging.ERROR)
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = address or os.environ.get("RAY_ADDRESS") or "this machine"
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
        raise ValueError(f"could not start or reach Ray at {where} ({first}): start the "
                         f"head with `ray start --head` and pass its address") from None


def _write_aggregate(study_dir: Path, write: Callable[[str], None]) -> None:
    from atari_rl.study_stats import AGGREGATE_FILE, cached_aggregate, load_study

    cached_aggregate(load_study(study_dir))  # recomputed only when a trial's score changed
    write(f"aggregate: {study_dir / AGGREGATE_FILE}")
