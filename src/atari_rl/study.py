"""What a study is: configurations (a preset plus overrides) crossed with games and seeds.

A study answers a question that one run cannot: on Breakout the score of one setting varies
between seeds by more than the gaps between settings, so each configuration is trained with
several seeds and compared with confidence intervals (`study_stats.py`). A spec is a TOML
file, or the name of one shipped in `atari_rl/studies/`:

    name = "n-study"
    steps = 1_000_000      # agent steps per trial
    games = 30             # evaluation games per trial
    protocols = ["epsilon"]  # evaluation protocols; the first is the study's score
    seeds = [0, 1, 2]
    game = ["breakout"]    # Atari games, crossed with the configurations and seeds

    [[configurations]]
    name = "n5"
    preset = "seed-n5"
    overrides = { entropy_coef = 0.01 }

A trial is one configuration on one game with one seed: one ordinary run directory, trained
and then evaluated. How the trials run (Ray) lives in `study_run.py`.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atari_rl import config as cfg
from atari_rl.algorithms import presets
from atari_rl.evaluation import PROTOCOLS

BUILTIN_DIR = Path(__file__).parent / "studies"
DEFAULT_OUT = Path("runs")  # a study named NAME goes to runs/study-NAME by default
STUDY_FILE = "study.json"  # a study directory's description of itself
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # safe as a directory name
# Decided by the study itself, not by a configuration's overrides.
STUDY_OWNED = {"algo", "preset", "seed", "game"}
# What a trial's score is unless the spec says otherwise: `atari-rl evaluate`'s headline
DEFAULT_PROTOCOLS = ("epsilon",)


@dataclass(frozen=True)
class Configuration:
    """One setting compared in the study: a preset and what it changes."""

    name: str
    preset: str
    overrides: dict[str, Any] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class Trial:
    """One run of the study: a configuration on a game with a seed."""

    run: str  # its run directory's name under the study's runs/
    configuration: str
    game: str
    seed: int
    steps: int
    eval_games: int
    protocols: tuple[str, ...] = DEFAULT_PROTOCOLS  # played after training; the first scores

    def train_args(self, spec: StudySpec) -> list[str]:
        """The `atari-rl train` options of a new run of this trial (without --run-dir)."""
        configuration = spec.configuration(self.configuration)
        args = ["--preset", configuration.preset, "--game", self.game, "--seed", str(self.seed),
                "--steps", str(self.steps)]
        settings = {"checkpoint_every": spec.checkpoint_every, **configuration.overrides}
        settings.pop("steps", None)
        for name, value in settings.items():
            option = f"--{name.replace('_', '-')}"
            if isinstance(value, bool):
                args.append(option if value else f"--no-{name.replace('_', '-')}")
            else:
                args += [option, str(value)]
        return args


@dataclass
class StudySpec:
    """A study as written in its TOML file, after the command line's changes."""

    name: str
    configurations: list[Configuration]
    seeds: list[int]
    steps: int  # agent steps per trial (a configuration may override it)
    games: int = 30  # evaluation games per trial (`atari-rl evaluate --games`)
    # `atari-rl evaluate --protocols`: the first one is the trial's score, the others are
    # kept in each run's evaluation.json (a sticky-action study scores under "sticky")
    protocols: list[str] = field(default_factory=lambda: list(DEFAULT_PROTOCOLS))
    game: list[str] = field(default_factory=lambda: ["breakout"])
    description: str = ""
    cpus_per_trial: int = 1  # the trial's torch and emulator threads; Ray packs by this
    # The GPU share each trial asks Ray for; None: where the cluster has GPUs, each trial gets
    # a share in proportion to its CPUs, so GPUs never limit how many trials run at once.
    gpus_per_trial: float | None = None
    checkpoint_every: int = 100_000  # agent steps: what a killed study loses at most per trial

    def configuration(self, name: str) -> Configuration:
        return next(c for c in self.configurations if c.name == name)

    def chooses(self, trial: dict[str, Any]) -> bool:
        """Whether a trial of a study directory is one of this spec's configurations'
        (--configurations may have left some of the directory's out)."""
        return any(c.name == trial["configuration"] for c in self.configurations)

    def trials(self) -> list[Trial]:
        """Every trial, configuration by configuration, then game, then seed."""
        return [
            Trial(run=f"{c.name}-{game}-seed{seed}", configuration=c.name, game=game, seed=seed,
                  steps=int(c.overrides.get("steps", self.steps)), eval_games=self.games,
                  protocols=tuple(self.protocols))
            for c in self.configurations for game in self.game for seed in self.seeds
        ]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def builtin_studies() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.toml"))


def load_spec(name_or_path: str) -> StudySpec:
    """A built-in study by name, a TOML file, or a study directory (the spec it ran with);
    ValueError with one line when it is bad."""
    path = Path(name_or_path)
    if (path / STUDY_FILE).is_file():
        try:
            record = json.loads((path / STUDY_FILE).read_text())
            spec = spec_from_dict({**record["spec"], "configurations": record["configurations"]})
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"cannot read the study in {path}: {error}") from None
        validate(spec)
        return spec
    if not path.is_file():
        if name_or_path not in builtin_studies():
            raise ValueError(f"'{name_or_path}' is neither a TOML file nor a built-in study "
                             f"(built in: {', '.join(builtin_studies())})")
        path = BUILTIN_DIR / f"{name_or_path}.toml"
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ValueError(f"cannot read the study {path}: {error}") from None
    return parse_spec(data, default_name=path.stem)


def parse_spec(data: dict[str, Any], default_name: str) -> StudySpec:
    """Check every key and value of a study's TOML, so that a bad spec starts nothing."""
    known = {f.name for f in dataclasses.fields(StudySpec)}
    unknown = sorted(set(data) - known)
    _require(not unknown, f"unknown key '{unknown[0] if unknown else ''}' in the study "
             f"(known: {', '.join(sorted(known))})")
    raw = data.get("configurations")
    _require(isinstance(raw, list) and raw, "the study needs [[configurations]] tables, each "
             "with a name and a preset")
    configurations = [_configuration(entry) for entry in raw]
    names = [c.name for c in configurations]
    _require(len(set(names)) == len(names), "two configurations share a name: names must be "
             "unique")
    game = data.get("game", ["breakout"])
    spec = StudySpec(
        name=data.get("name", default_name),
        configurations=configurations,
        seeds=data.get("seeds", [0, 1, 2]),
        steps=data.get("steps", 1_000_000),
        games=data.get("games", 30),
        protocols=data.get("protocols", list(DEFAULT_PROTOCOLS)),
        game=[game] if isinstance(game, str) else game,
        description=data.get("description", ""),
        cpus_per_trial=data.get("cpus_per_trial", 1),
        gpus_per_trial=data.get("gpus_per_trial"),
        checkpoint_every=data.get("checkpoint_every", 100_000),
    )
    validate(spec)
    return spec


def validate(spec: StudySpec) -> None:
    """Resolve every trial's config as `atari-rl train` would: a bad override fails here."""
    _require(isinstance(spec.name, str) and bool(NAME_PATTERN.match(spec.name)),
             f"study name '{spec.name}' must be letters, digits, '-', '_' or '.'")
    _require(_int_list(spec.seeds) and len(set(spec.seeds)) == len(spec.seeds),
             "seeds must be a non-empty list of different integers, e.g. --seeds 0,1,2")
    _require(_positive_int(spec.steps), "steps must be a positive number of agent steps")
    _require(_positive_int(spec.games), "games (evaluation games per trial) must be at least 1")
    _require(isinstance(spec.protocols, list) and spec.protocols
             and all(p in PROTOCOLS for p in spec.protocols)
             and len(set(spec.protocols)) == len(spec.protocols),
             f"protocols must be a list of different evaluation protocols, the first being "
             f"the study's score (known: {', '.join(PROTOCOLS)})")
    _require(_positive_int(spec.cpus_per_trial), "cpus_per_trial must be a positive integer")
    _require(spec.gpus_per_trial is None or (isinstance(spec.gpus_per_trial, int | float)
                                             and spec.gpus_per_trial >= 0),
             "gpus_per_trial must be 0 or more (a fraction shares a GPU)")
    _require(_positive_int(spec.checkpoint_every),
             "checkpoint_every must be a positive number of agent steps")
    _require(isinstance(spec.game, list) and spec.game and all(isinstance(g, str)
                                                                 for g in spec.game),
             "game must be a game name or a list of them")
    spec.game = [cfg.game_id(g) for g in spec.game]
    for trial in spec.trials():
        configuration = spec.configuration(trial.configuration)
        overrides = {**configuration.overrides, "game": trial.game, "seed": trial.seed,
                     "steps": trial.steps, "checkpoint_every": spec.checkpoint_every}
        try:
            cfg.resolve(None, configuration.preset, overrides)
        except (ValueError, TypeError) as error:
            raise ValueError(f"configuration '{configuration.name}': {error}") from None


def _configuration(entry: Any) -> Configuration:
    _require(isinstance(entry, dict), "each [[configurations]] entry must be a table")
    known = {f.name for f in dataclasses.fields(Configuration)}
    unknown = sorted(set(entry) - known)
    name = entry.get("name", "?")
    _require(not unknown, f"configuration '{name}': unknown key '{unknown[0] if unknown else ''}'"
             f" (known: {', '.join(sorted(known))}; settings go in overrides = {{...}})")
    _require(isinstance(name, str) and bool(NAME_PATTERN.match(name)),
             f"configuration name '{name}' must be letters, digits, '-', '_' or '.'")
    preset = entry.get("preset")
    _require(preset in presets(), f"configuration '{name}': unknown preset '{preset}' "
             f"(`atari-rl presets` lists them)")
    overrides = entry.get("overrides", {})
    _require(isinstance(overrides, dict), f"configuration '{name}': overrides must be a table")
    owned = sorted(set(overrides) & STUDY_OWNED)
    _require(not owned, f"configuration '{name}': '{owned[0] if owned else ''}' is set by the "
             f"study itself, not by overrides")
    return Configuration(name=name, preset=preset, overrides=dict(overrides),
                         description=entry.get("description", ""))


def apply_command_line(spec: StudySpec, seeds: str | None, steps: int | None,
                       games: int | None, configurations: str | None = None,
                       cpus_per_trial: int | None = None) -> StudySpec:
    """The command line's --seeds, --steps and --games replace the spec's (steps: every
    configuration's, its own overrides included); --configurations keeps only the ones it
    names (a second seed for the leading settings of a long study, say). --cpus-per-trial
    replaces the spec's cores per trial: with fewer trials left than cores (the last one of
    a study on a 2-core machine), one core each would leave the others idle. It is not part
    of what a trial is: threads change the speed, not what is learned."""
    if configurations is not None:
        names = [name.strip() for name in configurations.split(",") if name.strip()]
        known = [c.name for c in spec.configurations]
        for name in names:
            _require(name in known, f"--configurations: the study has no configuration "
                                    f"'{name}' (it has {', '.join(known)})")
        _require(bool(names), "--configurations must name at least one configuration")
        spec.configurations = [c for c in spec.configurations if c.name in names]
    if seeds is not None:
        try:
            spec.seeds = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            raise ValueError(f"--seeds must be integers separated by commas, not '{seeds}'") \
                from None
    if steps is not None:
        spec.steps = steps
        spec.configurations = [
            dataclasses.replace(c, overrides={k: v for k, v in c.overrides.items()
                                              if k != "steps"})
            for c in spec.configurations]
    if games is not None:
        spec.games = games
    if cpus_per_trial is not None:
        _require(_positive_int(cpus_per_trial), "--cpus-per-trial must be a positive integer")
        spec.cpus_per_trial = cpus_per_trial
    validate(spec)
    return spec


def spec_from_dict(data: dict[str, Any]) -> StudySpec:
    """Rebuild the spec saved in a study directory's study.json."""
    configurations = [Configuration(**c) for c in data["configurations"]]
    return StudySpec(**{**data, "configurations": configurations})


def _int_list(values: Any) -> bool:
    return isinstance(values, list) and bool(values) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in values)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
