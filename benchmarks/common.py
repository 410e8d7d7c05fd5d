"""What the benchmark scripts share: timing a learner, timing the parts of a training loop,
the arithmetic ceiling of a learner on these cores, and a learning run scored by `atari-rl
evaluate` (SB3, the peer, is in `sb3_peer.py`)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atari_rl.run_files import CHECKPOINT_DIR, EVALUATION_FILE, FINAL_POLICY, METRICS_FILE


def add_learning_options(parser: Any, preset: str, steps: int) -> None:
    """--learning and the options of its run, the same in every benchmark that trains."""
    group = parser.add_argument_group("learning (--learning)")
    group.add_argument("--learning", action="store_true",
                       help="train a preset, then score whole evaluation games")
    group.add_argument("--learning-preset", default=preset, help="the preset --learning trains")
    group.add_argument("--learning-steps", type=int, default=steps,
                       help="agent steps of the learning run (its schedules' length)")
    group.add_argument("--time-limit", type=float, default=None,
                       help="seconds of training; then SIGTERM, and its checkpoint is scored")
    group.add_argument("--train-option", action="append", default=[],
                       help="an extra `atari-rl train` option, e.g. --train-option=--num-envs=16")
    group.add_argument("--eval-option", action="append", default=[],
                       help="an extra `atari-rl evaluate` option, e.g. "
                            "--eval-option=--num-envs=32")
    group.add_argument("--games", type=int, default=30, help="evaluation games")
    group.add_argument("--run-dir", type=Path, default=None, help="of the learning run")


def learning(args: Any) -> dict[str, Any]:
    """The learning run that `add_learning_options`' options describe, and its scores."""
    options = tuple(args.train_option)  # --num-envs=16 form: argparse takes it as is
    return {"learning_preset": args.learning_preset, "train_options": list(options),
            **learn_and_evaluate(args.learning_preset, args.learning_steps, args.games,
                                 options=options, time_limit_s=args.time_limit,
                                 run_dir=args.run_dir, eval_options=tuple(args.eval_option))}


def learn_and_evaluate(preset: str, steps: int, games: int, options: tuple[str, ...] = (),
                       time_limit_s: float | None = None, run_dir: Path | None = None,
                       eval_options: tuple[str, ...] = ()) -> dict[str, Any]:
    """Train a preset for `steps` agent steps, then score `games` whole evaluation games.

    With `time_limit_s`, training gets SIGTERM when the time is up: the run writes a
    checkpoint and stops, and that checkpoint is what is scored (for a lent machine's short
    budget). `options` are more `atari-rl train` options, `eval_options` more `atari-rl
    evaluate` options (--num-envs=32, say: the scores do not depend on it).
    """
    run_dir = run_dir or Path("runs") / f"bench-{preset}-breakout-{time.strftime('%Y%m%d-%H%M%S')}"
    start = time.perf_counter()
    training = subprocess.Popen([sys.executable, "-m", "atari_rl.cli", "train", "--preset", preset,
                                 "--steps", str(steps), "--run-dir", str(run_dir), *options])
    try:
        training.wait(timeout=time_limit_s)
    except subprocess.TimeoutExpired:
        training.send_signal(signal.SIGTERM)  # the run checkpoints, then exits
        training.wait()
    hours = (time.perf_counter() - start) / 3600
    checkpoints = sorted((run_dir / CHECKPOINT_DIR).glob("step-*"))
    done = run_dir / FINAL_POLICY
    target = run_dir if done.is_file() else checkpoints[-1]
    reached = int(checkpoints[-1].name.split("-")[1]) if checkpoints else steps
    out = run_dir / EVALUATION_FILE
    subprocess.run([sys.executable, "-m", "atari_rl.cli", "evaluate", str(target),
                    "--protocols", "epsilon", "--games", str(games), "--out", str(out),
                    *eval_options], check=True)
    result = json.loads(out.read_text())
    return {"learning_steps": reached, "train_hours": round(hours, 3), "run_dir": str(run_dir),
            "eval_games": games, "eval_mean": result["mean"], "eval_std": result["std"],
            "eval_median": result["median"],
            **time_to_scores(run_dir / METRICS_FILE)}


def time_to_scores(metrics: Path, scores: tuple[int, ...] = (50, 100, 150, 200, 300)
                   ) -> dict[str, dict[str, float | None]]:
    """When the rolling 100-game training mean first reached each score (None: never), in
    agent steps (`train_steps_to_mean100`: what sample efficiency is measured in) and in
    seconds of training (`train_seconds_to_mean100`: the sum of each metrics.csv row's steps
    over its steps/s, so process start-up and the time between the last row and the score
    are left out). Both are read at the logged rows, every `--log-every` agent steps."""
    import csv

    steps_to: dict[str, float | None] = {str(score): None for score in scores}
    seconds_to: dict[str, float | None] = {str(score): None for score in scores}
    seconds, previous = 0.0, 0
    with open(metrics) as handle:
        for row in csv.DictReader(handle):
            step, rate = int(row["step"]), float(row["steps_per_s"])
            seconds += (step - previous) / rate if rate > 0 else 0.0
            previous = step
            for score in scores:
                if steps_to[str(score)] is None and float(row["score_mean100"]) >= score:
                    steps_to[str(score)], seconds_to[str(score)] = step, round(seconds, 1)
    return {"train_steps_to_mean100": steps_to, "train_seconds_to_mean100": seconds_to}


def train_in(config: Any, run_dir: Path) -> None:
    """One real training run (atari_rl.training.train) of `config`, written to run_dir."""
    from atari_rl.envs import AtariPipeline
    from atari_rl.training import train

    env = AtariPipeline(config.env_config())
    try:
        train(config, run_dir, env)
    finally:
        env.close()


def ours_steps_per_s(config: Any, timed_from: int) -> float:
    """Median agent steps/s of a real training run (atari_rl.training.train), read from the
    metrics.csv rows that start at or after `timed_from` (past warm-up and compilation);
    the last row is partial and left out."""
    import csv
    import statistics

    config.validate()
    with tempfile.TemporaryDirectory() as run_dir:
        train_in(config, Path(run_dir))
        with open(Path(run_dir) / METRICS_FILE) as handle:
            rows = [(int(row["step"]), float(row["steps_per_s"]))
                    for row in csv.DictReader(handle)]
    rates = [rate for (previous, _), (_, rate) in zip(rows, rows[1:], strict=False)
             if previous >= timed_from]
    return statistics.median(rates[:-1] if len(rates) > 2 else rates)


def forward_flops(network: Any) -> tuple[int, int]:
    """FLOPs (two per multiply-add) of one forward of `network` on one 4x84x84 stack, and of
    its first layer alone: a learner's backward computes every layer's weight gradient (as
    many FLOPs as its forward) and every layer's input gradient but the first's, since the
    pixels need none. So a trained sample costs 3 * total - first."""
    import torch

    counts: list[int] = []

    def count(module: torch.nn.Module, _: Any, output: torch.Tensor) -> None:
        positions = output[0, 0].numel() if isinstance(module, torch.nn.Conv2d) else 1
        counts.append(2 * module.weight.numel() * positions)

    hooks = [module.register_forward_hook(count) for module in network.modules()
             if isinstance(module, torch.nn.Conv2d | torch.nn.Linear)]
    try:
        with torch.no_grad():
            network(torch.zeros(1, 4, 84, 84, dtype=torch.uint8))
    finally:
        for hook in hooks:
            hook.remove()
    return sum(counts), counts[0]


def matmul_gflop_per_s(bf16: bool, size: int = 2048, repeats: int = 20,
                       device: Any = "cpu") -> float:
    """GFLOP/s of a size x size matrix product on `device`: about the most it computes, and
    so the ceiling of any learner there."""
    import torch

    dtype = torch.bfloat16 if bf16 else torch.float32
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    synchronize = torch.cuda.synchronize if a.is_cuda else (lambda: None)
    for _ in range(3):
        a @ b
    synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def learner_ceiling(measured: LoopProfile, update_part: str, flops: float,
                    config: Any) -> dict[str, float]:
    """The learner's arithmetic rate in the loop (`flops` over the time in `update_part`),
    and the agent steps/s the same loop would reach if its learner ran at the rate of a
    large matrix product on the run's device and precision (`config.device`, `config.bf16`)
    while every other part kept its measured time: the bound of what making the learner
    faster can give there."""
    from atari_rl.networks import bf16_pays_off, pick_device

    device = pick_device(config.device)
    ceiling_gflop_per_s = matmul_gflop_per_s(config.bf16 and bf16_pays_off(device),
                                             device=device)
    update_s = measured.seconds[update_part]
    at_ceiling_s = measured.wall_s - update_s + flops / (ceiling_gflop_per_s * 1e9)
    return {"learner_gflop_per_s": round(flops / update_s / 1e9, 1),
            "machine_matmul_gflop_per_s": round(ceiling_gflop_per_s, 1),
            "agent_steps_per_s_learner_at_matmul_rate":
                round(measured.agent_steps / at_ceiling_s, 1)}


class PartTimer:
    """Wraps methods so that their wall time is summed once `on` is set."""

    def __init__(self) -> None:
        self.on = False
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._undo: list[tuple[type, str, Callable]] = []

    def wrap(self, name: str, owner: type, method: str) -> None:
        original = getattr(owner, method)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                if self.on:
                    self.seconds[name] += time.perf_counter() - start
                    self.calls[name] += 1

        self._undo.append((owner, method, original))
        setattr(owner, method, timed)

    def restore(self) -> None:
        for owner, method, original in reversed(self._undo):
            setattr(owner, method, original)


@dataclass
class LoopProfile:
    """What `profile_loop` measured, over its timed window."""

    wall_s: float
    agent_steps: int
    seconds: dict[str, float]  # wall time inside each part
    calls: dict[str, int]

    @property
    def agent_steps_per_s(self) -> float:
        return self.agent_steps / self.wall_s


def profile_loop(config: Any, agent_class: type, parts: dict[str, tuple[type, str]],
                 timed_from: int) -> LoopProfile:
    """A real training run in a temporary directory, timed from the first agent step at or
    after `timed_from` (past warm-up and compilation) to the end, with the wall time inside
    each part (name: (class, method)) summed over the same window. The window opens before
    `agent_class.observe` and closes after it, so the updates it runs are inside."""
    timer = PartTimer()
    for name, (owner, method) in parts.items():
        timer.wrap(name, owner, method)
    window: dict[str, float] = {}
    original = agent_class.observe

    def observe(agent: Any, obs: Any, step: Any, agent_step: int) -> Any:
        if agent_step >= timed_from and not timer.on:
            timer.on, window["start"], window["first"] = True, time.perf_counter(), agent_step
        result = original(agent, obs, step, agent_step)
        window["end"], window["last"] = time.perf_counter(), agent_step
        return result

    agent_class.observe = observe
    try:
        with tempfile.TemporaryDirectory() as run_dir:
            train_in(config, Path(run_dir))
    finally:
        agent_class.observe = original
        timer.restore()
    return LoopProfile(window["end"] - window["start"], int(window["last"] - window["first"]),
                       {name: timer.seconds[name] for name in parts},
                       {name: timer.calls[name] for name in parts})
