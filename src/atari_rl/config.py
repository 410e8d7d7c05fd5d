"""Run configurations as dataclasses, and named presets of them.

`RunConfig` holds what every algorithm shares; each algorithm's module subclasses it, with
defaults that are the best settings known for Breakout, and declares its presets: named
sets of changes to them (the write-up's study, for instance). Any value of either can be
overridden from the command line. Which algorithms exist is `algorithms.py`'s to say.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from atari_rl.cliff import parse_reaction
from atari_rl.envs import EnvConfig, game_id


@dataclass
class RunConfig:
    """What every algorithm shares: the game, the budget and how the envs are played."""

    algo: str = ""
    preset: str = ""  # the named settings the run started from (`atari-rl presets`), if any
    game: str = "breakout"  # the ALE game, e.g. breakout or pong (its ROM ships with ale-py)
    steps: int = 10_000_000  # agent steps (one action in every env counts num_envs)
    seed: int = 0  # seeds the emulators, the network's weights and every random draw
    num_envs: int = 16  # games played at once, one batched step for all of them
    env_threads: int = 0  # emulator threads; 0: one per core that is free at the start
    torch_threads: int = 0  # learner threads; 0: one per free core, counted every 5 s
    device: str = "auto"  # auto: CUDA when present, else the CPU
    noop_max: int = 30  # each game starts after up to this many random no-op frames
    life_loss_ends_episode: bool = True  # a lost life ends the learner's episode (not the game)
    fire_after_life_loss: bool = True  # press FIRE after a reset or a lost life, as Breakout needs
    repeat_first_frame: bool = True  # an episode's first stack repeats its first frame, not zeros
    sticky_action_prob: float = 0.0  # the chance that the emulator repeats the last action
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
        require(self.steps > 0, "--steps must be a positive number of agent steps")
        require(self.num_envs > 0, "--num-envs must be at least 1")
        require(0.0 <= self.sticky_action_prob < 1.0, "--sticky-action-prob must be in [0, 1)")
        require(self.noop_max >= 0, "--noop-max must be 0 or more")
        require(self.log_every > 0, "--log-every must be a positive number of agent steps")
        require(self.checkpoint_every > 0,
                 "--checkpoint-every must be a positive number of agent steps")
        require(self.keep_checkpoints > 0, "--keep-checkpoints must be at least 1")
        parse_reaction(self.on_cliff)
        require(0.0 < self.cliff_lr_factor <= 1.0, "--cliff-lr-factor must be in (0, 1]")
        require(self.device in ("auto", "cpu", "cuda"), "--device must be auto, cpu or cuda")


@dataclass(frozen=True)
class Preset:
    """Named settings: changes to an algorithm's defaults, with what they are for."""

    name: str
    algo: str
    summary: str
    changes: dict[str, Any]


def resolve(algo: str | None, preset: str | None, overrides: dict[str, Any]) -> RunConfig:
    """The config of a run: algorithm defaults, then the preset, then the command line.
    Without --algo or --preset, the first registered algorithm (A2C)."""
    from atari_rl.algorithms import algorithms, get, presets

    known_presets = presets()
    if preset is not None and preset not in known_presets:
        raise ValueError(f"unknown preset '{preset}': `atari-rl presets` lists them")
    if algo is None:
        algo = known_presets[preset].algo if preset else next(iter(algorithms()))
    config_class = get(algo).config
    if preset is not None and known_presets[preset].algo != algo:
        raise ValueError(f"preset '{preset}' is for {known_presets[preset].algo}, not {algo}")
    types = {f.name: str(f.type) for f in dataclasses.fields(config_class)}
    changes = {**known_presets[preset].changes, "preset": preset} if preset else {}
    for name, value in overrides.items():
        if name not in types or name == "preset":
            raise ValueError(f"--{name.replace('_', '-')} does not apply to {algo}")
        _check_type(name, value, types[name])
        changes[name] = value
    config = config_class(**changes)
    config.validate()
    return config


_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "str": (str,),
                                       "bool": (bool,), "int | str": (int, str)}


def split_optional(annotation: str) -> tuple[str, bool]:
    """A field's annotation without its `| None`, and whether it had one (`float | None`):
    what the command line parses and what an override is checked against."""
    base = annotation.removesuffix(" | None")
    return base, base != annotation


def _check_type(name: str, value: Any, annotation: str) -> None:
    """An override from a study's TOML can be of any type; the command line's are parsed.
    An optional field (`float | None`) takes its type's values or None."""
    base, optional = split_optional(annotation)
    allowed = _TYPES.get(base, (object,)) + ((type(None),) if optional else ())
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        raise ValueError(f"--{name.replace('_', '-')} must be {annotation.replace(' | ', ' or ')}"
                         f", not {value!r}")


def from_dict(data: dict[str, Any]) -> RunConfig:
    """Rebuild a config saved in a run directory (config.json)."""
    from atari_rl.algorithms import algorithms

    algorithm = algorithms().get(data.get("algo", ""))
    if algorithm is None:
        raise ValueError(f"config names an unknown algorithm '{data.get('algo')}'")
    config_class = algorithm.config
    known = {f.name for f in dataclasses.fields(config_class)}
    config = config_class(**{k: v for k, v in data.items() if k in known})
    config.validate()
    return config


def require(condition: bool, message: str) -> None:
    """Every validate's check: ValueError with the one line the command line shows."""
    if not condition:
        raise ValueError(message)
