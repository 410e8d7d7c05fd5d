"""Run configurations as dataclasses, and named presets of them.

The dataclass defaults are the best settings known for Breakout; a preset is a named set
of changes to them (the write-up's study, for instance), and any value of either can be
overridden from the command line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from atari_rl.cliff import parse_reaction
from atari_rl.envs import EnvConfig, game_id

EPISODE = "episode"


@dataclass
class RunConfig:
    """What every algorithm shares: the game, the budget and how the envs are played."""

    algo: str = ""
    game: str = "breakout"
    steps: int = 10_000_000  # agent steps (one action in every env counts num_envs)
    seed: int = 0
    num_envs: int = 16
    env_threads: int = 0  # emulator threads; 0: one per core
    torch_threads: int = 0  # learner threads; 0: one per core
    device: str = "auto"  # auto: CUDA when present, else the CPU
    noop_max: int = 30
    life_loss_ends_episode: bool = True
    fire_after_life_loss: bool = True
    repeat_first_frame: bool = True
    sticky_action_prob: float = 0.0
    log_every: int = 10_000  # agent steps between rows of metrics.csv
    checkpoint_every: int = 500_000  # agent steps between checkpoints
    keep_checkpoints: int = 3  # the newest ones kept, besides the best-scoring one
    # Restart every game at each checkpoint, so that a run resumed after a crash equals,
    # bit for bit, the run never interrupted. Off by default: the games cut at each
    # checkpoint are lost, and the first games to end after a restart are the short ones,
    # which dents the rolling scores (see the README).
    exact_resume: bool = False
    on_cliff: str = "warn"  # what a sign of collapse triggers: warn, rollback or stop
    cliff_lr_factor: float = 0.5  # a rollback multiplies the learning rate by this

    def env_config(self) -> EnvConfig:
        return EnvConfig(
            game=self.game,
            num_envs=self.num_envs,
            num_threads=self.env_threads,
            seed=self.seed,
            noop_max=self.noop_max,
            life_loss_ends_episode=self.life_loss_ends_episode,
            fire_after_life_loss=self.fire_after_life_loss,
            repeat_first_frame=self.repeat_first_frame,
            sticky_action_prob=self.sticky_action_prob,
        )

    def validate(self) -> None:
        """Raise ValueError with one line naming the bad value and what to do."""
        self.game = game_id(self.game)
        _require(self.steps > 0, "--steps must be a positive number of agent steps")
        _require(self.num_envs > 0, "--num-envs must be at least 1")
        _require(0.0 <= self.sticky_action_prob < 1.0, "--sticky-action-prob must be in [0, 1)")
        _require(self.noop_max >= 0, "--noop-max must be 0 or more")
        _require(self.log_every > 0, "--log-every must be a positive number of agent steps")
        _require(self.checkpoint_every > 0,
                 "--checkpoint-every must be a positive number of agent steps")
        _require(self.keep_checkpoints > 0, "--keep-checkpoints must be at least 1")
        parse_reaction(self.on_cliff)
        _require(0.0 < self.cliff_lr_factor <= 1.0, "--cliff-lr-factor must be in (0, 1]")
        _require(self.device in ("auto", "cpu", "cuda"), "--device must be auto, cpu or cuda")


@dataclass
class A2CConfig(RunConfig):
    """Synchronous advantage actor-critic (Mnih et al. 2016, the synchronous form of A3C)."""

    algo: str = "a2c"
    n_steps: int | str = 5  # a positive integer, or "episode" for Monte Carlo returns
    max_rollout_steps: int = 2_000  # bounds memory when n_steps is "episode"
    gamma: float = 0.99
    learning_rate: float = 7e-4
    lr_schedule: str = "linear"  # linear decay to 0 over the run (as OpenAI baselines), or constant
    optimizer: str = "rmsprop"  # rmsprop as in A3C, or adam
    rmsprop_alpha: float = 0.99
    optimizer_eps: float = 1e-5
    entropy_coef: float = 0.01
    value_coef: float = 0.5
    max_grad_norm: float = 0.5
    action_selection: str = "sample"  # sample, or argmax (the write-up's choice)
    compile: bool = True  # torch.compile the network (FACTS.md: +50% on this CPU)
    bf16: bool = True  # bf16 autocast of the torso, acting and learning, on CPUs that have it
    log_every: int = 8_000

    def validate(self) -> None:
        super().validate()
        if isinstance(self.n_steps, str) and self.n_steps != EPISODE:
            self.n_steps = parse_n_steps(self.n_steps)
        _require(self.n_steps == EPISODE or self.n_steps > 0,
                 "--n-steps must be a positive integer or 'episode'")
        _require(self.max_rollout_steps > 0, "--max-rollout-steps must be positive")
        _require(0.0 < self.gamma <= 1.0, "--gamma must be in (0, 1]")
        _require(self.learning_rate > 0, "--learning-rate must be positive")
        _require(self.lr_schedule in ("constant", "linear"),
                 "--lr-schedule must be constant or linear")
        _require(self.optimizer in ("rmsprop", "adam"), "--optimizer must be rmsprop or adam")
        _require(self.action_selection in ("sample", "argmax"),
                 "--action-selection must be sample or argmax")
        _require(self.max_grad_norm > 0, "--max-grad-norm must be positive")


ALGORITHMS: dict[str, type[RunConfig]] = {"a2c": A2CConfig}


@dataclass(frozen=True)
class Preset:
    name: str
    algo: str
    summary: str
    changes: dict[str, Any]


def _seed_study(n_steps: int | str) -> Preset:
    """The write-up's study: entropy 0.1, critic 0.5, argmax actions, linear decay."""
    return Preset(
        name=f"seed-n{'inf' if n_steps == EPISODE else n_steps}",
        algo="a2c",
        summary=f"the write-up's A2C with N = {n_steps} (entropy 0.1, argmax actions, linear lr)",
        changes={
            "n_steps": n_steps,
            "entropy_coef": 0.1,
            "value_coef": 0.5,
            "action_selection": "argmax",
            "lr_schedule": "linear",
        },
    )


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset("a2c", "a2c", "best known A2C settings for Breakout (the default)", {}),
        *(_seed_study(n) for n in (5, 20, 50, 100, EPISODE)),
    ]
}


def register(algo: str, config_class: type[RunConfig], presets: list[Preset]) -> None:
    """Let an algorithm module add its config and presets."""
    ALGORITHMS[algo] = config_class
    PRESETS.update({p.name: p for p in presets})


def parse_n_steps(text: str | int) -> int | str:
    if text == EPISODE:
        return EPISODE
    try:
        return int(text)
    except ValueError:
        raise ValueError(
            f"--n-steps must be a positive integer or 'episode', not '{text}'") from None


def resolve(algo: str | None, preset: str | None, overrides: dict[str, Any]) -> RunConfig:
    """The config of a run: algorithm defaults, then the preset, then the command line."""
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset '{preset}': `atari-rl presets` lists them")
    if algo is None:
        algo = PRESETS[preset].algo if preset else "a2c"
    if algo not in ALGORITHMS:
        raise ValueError(f"unknown algorithm '{algo}': choose one of {', '.join(ALGORITHMS)}")
    if preset is not None and PRESETS[preset].algo != algo:
        raise ValueError(f"preset '{preset}' is for {PRESETS[preset].algo}, not {algo}")
    config_class = ALGORITHMS[algo]
    known = {f.name for f in dataclasses.fields(config_class)}
    changes = dict(PRESETS[preset].changes) if preset else {}
    for name, value in overrides.items():
        if name not in known:
            raise ValueError(f"--{name.replace('_', '-')} does not apply to {algo}")
        changes[name] = value
    config = config_class(**changes)
    config.validate()
    return config


def from_dict(data: dict[str, Any]) -> RunConfig:
    """Rebuild a config saved in a run directory (config.json)."""
    config_class = ALGORITHMS.get(data.get("algo", ""))
    if config_class is None:
        raise ValueError(f"config names an unknown algorithm '{data.get('algo')}'")
    known = {f.name for f in dataclasses.fields(config_class)}
    config = config_class(**{k: v for k, v in data.items() if k in known})
    config.validate()
    return config


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass
class DQNConfig(RunConfig):
    """Double DQN (van Hasselt et al. 2016) with a compressed replay memory.

    `train_freq`, `target_update`, `learning_starts` and `epsilon_steps` count agent steps
    summed over the envs, so one update per `train_freq` agent steps keeps the replay ratio
    (samples learned per step played, batch_size / train_freq) whatever `num_envs` is.
    The defaults are `dqn-fast`; `dqn-nature` changes them back to the classic settings.
    """

    algo: str = "dqn"
    num_envs: int = 8
    buffer_size: int = 1_000_000  # transitions over all envs; checked against free memory
    replay_codec: str = "zstd"  # frame compression in the replay memory: zstd, lz4 or zlib
    learning_starts: int = 20_000  # agent steps of random play before the first update
    batch_size: int = 64
    train_freq: int = 8  # agent steps per update
    target_update: int = 8_000  # agent steps between copies of the online network
    n_steps: int = 3  # n-step returns
    gamma: float = 0.99
    learning_rate: float = 1e-4  # Adam
    optimizer_eps: float = 1.5e-4
    max_grad_norm: float = 10.0
    epsilon_start: float = 1.0
    epsilon_end: float = 0.01
    epsilon_steps: int = 250_000  # agent steps of the linear decay
    dueling: bool = False
    compile: bool = True  # torch.compile the network (warm-up about 40 s on this CPU)
    bf16: bool = True  # bf16 autocast for the torso on CPUs that have it; Q heads stay fp32
    log_every: int = 10_000

    def validate(self) -> None:
        super().validate()
        _require(isinstance(self.n_steps, int) and self.n_steps > 0,
                 "--n-steps must be a positive integer for dqn")
        _require(self.batch_size > 0, "--batch-size must be positive")
        _require(self.train_freq > 0, "--train-freq must be a positive number of agent steps")
        _require(self.target_update > 0,
                 "--target-update must be a positive number of agent steps")
        _require(self.learning_starts >= 0, "--learning-starts must be 0 or more")
        _require(self.epsilon_steps >= 0, "--epsilon-steps must be 0 or more")
        _require(0.0 <= self.epsilon_end <= 1.0 and 0.0 <= self.epsilon_start <= 1.0,
                 "--epsilon-start and --epsilon-end must be in [0, 1]")
        _require(0.0 < self.gamma <= 1.0, "--gamma must be in (0, 1]")
        _require(self.learning_rate > 0, "--learning-rate must be positive")
        _require(self.max_grad_norm > 0, "--max-grad-norm must be positive")
        _require(self.replay_codec in ("zstd", "lz4", "zlib"),
                 "--replay-codec must be zstd, lz4 or zlib")
        from atari_rl.dqn import check_replay_memory  # the memory check lives with the agent

        check_replay_memory(self)


register("dqn", DQNConfig, [
    Preset("dqn-fast", "dqn", "Double DQN for the most Breakout score per wall-clock hour on a "
           "CPU (the default): 8 envs, 3-step returns, batch 64 every 8 steps", {}),
    Preset("dqn-nature", "dqn", "Double DQN with the classic Nature settings (1 env, 1 M "
           "buffer, batch 32 every 4 steps, epsilon 1 to 0.1 over 1 M steps), Adam", {
               "num_envs": 1,
               "learning_starts": 50_000,
               "batch_size": 32,
               "train_freq": 4,
               "target_update": 10_000,
               "n_steps": 1,
               "epsilon_end": 0.1,
               "epsilon_steps": 1_000_000,
           }),
])
