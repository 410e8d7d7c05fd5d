"""The `atari-rl` command.

Bad input ends in one line on stderr naming the problem and what to do, exit code 2,
and nothing written: every check runs before a run directory is created.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atari_rl import config as cfg
from atari_rl.run_files import (
    CHECKPOINT_TENSORS,
    CONFIG_FILE,
    EVALUATION_FILE,
    EVENTS_FILE,
    FIGURES_DIR,
    GAMES_FILE,
    GIF_SUFFIX,
    METRICS_FILE,
    RANDOM_EVALUATION_FILE,
    REPORT_FILE,
    VIDEO_FILE,
    VIDEO_INFO_SUFFIX,
    shipped_agents,
)

if TYPE_CHECKING:  # imported where used, as the commands import their modules
    from atari_rl.evaluation import EvalProtocol

USAGE_ERROR = 2
CLIFF_STOP = 3
# What may change when a run is resumed: the budget, and how the machine's cores are used.
RESUME_THREADS = {"torch_threads", "env_threads"}
RESUME_OPTIONS = {"steps", *RESUME_THREADS}
PRETRAINED_OUTPUT = "runs/pretrained"


class UsageError(Exception):
    """A problem with what the user asked for, reported as one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _int_or_word(text: str) -> int | str:
    """For a field that takes a number or a word (--n-steps 5 or episode): its validate()
    names what is allowed."""
    try:
        return int(text)
    except ValueError:
        return text


def _option_type(field: dataclasses.Field) -> dict[str, Any]:
    kind, _ = cfg.split_optional(str(field.type))
    if kind == "int | str":
        return {"type": _int_or_word, "metavar": "N|WORD"}
    parse = {"int": int, "float": float, "str": str, "bool": bool}[kind]
    if parse is bool:
        return {"action": argparse.BooleanOptionalAction}
    return {"type": parse}


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per config field, grouped by the algorithms that have it: every
    algorithm's first, then those of several (--entropy-coef), then each one's own. The
    help is the field's comment in its dataclass (RunConfig's for the fields it declares;
    each algorithm's where theirs differ, as --n-steps: returns for A2C and DQN, the
    rollout for PPO), and its default."""
    from atari_rl.algorithms import algorithms

    # field name: {algorithm: its field}, in registration order. The first owner's field
    # parses the option (a2c's `int | str` --n-steps admits "episode"; the others'
    # validate refuses it with one line).
    declared: dict[str, dict[str, dataclasses.Field]] = {}
    comments: dict[str, dict[str, str]] = {}  # field name: {algorithm: its comment}
    for name, algorithm in algorithms().items():
        own = field_comments(algorithm.config)
        for field in dataclasses.fields(algorithm.config):
            declared.setdefault(field.name, {})[name] = field
            if own.get(field.name):
                comments.setdefault(field.name, {})[name] = own[field.name]
    meanings = {name: _per_algorithm(by_algo, "{algo}: {value}", "; ")
                for name, by_algo in comments.items()}
    meanings.update({name: text for name, text in field_comments(cfg.RunConfig).items() if text})
    everyone = list(algorithms())
    groups: dict[str, list[str]] = {}
    for name in sorted(declared, key=lambda n: (list(declared[n]) != everyone,
                                                len(declared[n]) == 1)):
        if name in ("algo", "preset"):  # chosen by --algo and --preset themselves
            continue
        groups.setdefault(_group_title(list(declared[name]), everyone), []).append(name)
    for title, names in groups.items():
        group = parser.add_argument_group(title)
        for name in names:
            meaning = meanings.get(name, "")
            defaults = {algo: field.default for algo, field in declared[name].items()}
            default = _per_algorithm(defaults, "{value} for {algo}", ", ")
            group.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None,
                               help=(f"{meaning} " if meaning else "") + f"(default {default})",
                               **_option_type(next(iter(declared[name].values()))))


def _per_algorithm(by_algorithm: dict[str, Any], each: str, separator: str) -> str:
    """One value where the algorithms agree (--gamma's 0.99), else each one's, named
    (--n-steps' 5 for a2c, 3 for dqn, 128 for ppo)."""
    if len(set(map(str, by_algorithm.values()))) == 1:
        return str(next(iter(by_algorithm.values())))
    return separator.join(each.format(algo=algo, value=value)
                          for algo, value in by_algorithm.items())


def _group_title(owners: list[str], everyone: list[str]) -> str:
    if owners == everyone:
        return "options of every algorithm"
    if len(owners) == 1:
        return f"{owners[0]} options"
    return f"options of {', '.join(owners[:-1])} and {owners[-1]}"


def field_comments(config_class: type) -> dict[str, str]:
    """The comment of each field of a dataclass and of its bases: what the field means,
    written once beside it, and shown by --help. A comment block above a field that has no
    comment of its own is that field's; below a commented field, it continues that one."""
    import inspect
    import re

    comments: dict[str, str] = {}
    for klass in reversed(config_class.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        block: list[str] = []  # full-line comments not yet given to a field
        last = None  # the field above them, if it had a comment
        for line in inspect.getsource(klass).splitlines():
            comment = re.match(r"\s+#\s?(.*)$", line)
            if comment is not None:
                block.append(comment.group(1))
                continue
            field = re.match(r"\s+(\w+): [^=]+=[^#]*(?:#\s?(.*))?$", line)
            if field is not None and field.group(2) is None and block:
                comments[field.group(1)] = " ".join(block)
            elif block and last is not None:
                comments[last] += " " + " ".join(block)
            block = []
            last = field.group(1) if field is not None and field.group(2) is not None else None
            if last is not None:
                comments[last] = field.group(2)
    return {name: text.replace("%", "%%") for name, text in comments.items()}


def build_parser() -> argparse.ArgumentParser:
    from atari_rl.algorithms import algorithms

    parser = _Parser(prog="atari-rl", description="Deep RL agents that learn Atari games "
                     "from pixels: A2C, Double DQN and PPO, fast on a CPU.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser("train", help="train an agent, writing a run directory")
    train.add_argument("--algo", choices=list(algorithms()), default=None,
                       help="the algorithm (default: the preset's, else the first)")
    train.add_argument("--preset", default=None, help="named settings: `atari-rl presets`")
    train.add_argument("--run-dir", type=Path, default=None,
                       help="where the run is written (default runs/ALGO-GAME-TIME)")
    train.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                       help="continue a run from its last checkpoint (--steps may extend it)")
    _add_config_options(train)

    commands.add_parser("presets", help="list the named settings and what they change")
    _add_study_command(commands)
    _add_analysis_commands(commands)
    return parser


def _add_study_command(commands: Any) -> None:
    from atari_rl.study import DEFAULT_OUT, builtin_studies

    study = commands.add_parser(
        "study", help="train configurations x seeds on Ray (this machine or a cluster), then "
                      "compare them with confidence intervals")
    study.add_argument("spec", metavar="SPEC",
                       help=f"a built-in study ({', '.join(builtin_studies())}), a TOML file, "
                            f"or a study directory to finish")
    study.add_argument("--seeds", default=None, help="seeds of every configuration, e.g. 0,1,2 "
                       "(default: the spec's)")
    study.add_argument("--steps", type=int, default=None,
                       help="agent steps per trial (default: the spec's)")
    study.add_argument("--games", type=int, default=None,
                       help="evaluation games per trial (default: the spec's)")
    study.add_argument("--configurations", default=None, metavar="LIST",
                       help="only these of the spec's configurations, e.g. dueling,prioritized "
                            "(default: all); the others' trials are left as they are")
    study.add_argument("--cpus-per-trial", type=int, default=None, metavar="N",
                       help="cores (torch and emulator threads) each trial takes; Ray runs as "
                            "many trials at once as the cores allow (default: the spec's, 1 in "
                            "the built-in studies). Give the last trials more")
    study.add_argument("--out", type=Path, default=None,
                       help=f"the study directory (default {DEFAULT_OUT}/study-NAME); run the "
                            f"same command again to resume it")
    study.add_argument("--address", default=None,
                       help="a Ray cluster's address (default $RAY_ADDRESS; without either, "
                            "Ray starts on this machine)")


def _add_analysis_commands(commands: Any) -> None:
    """plot, evaluate, record, report: they read a run directory and never change its files.
    The defaults of evaluate and record are their dataclasses' (EvalProtocol, RecordSettings)."""
    from atari_rl.evaluation import PROTOCOLS, SIDE_BY_SIDE, EvalProtocol
    from atari_rl.media import RecordSettings

    plot = commands.add_parser("plot", help="PNG figures of a run, of several runs overlaid, "
                                            "or of a study")
    plot.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR|STUDY_DIR")
    _add_x_option(plot)
    plot.add_argument("--out", type=Path, default=None,
                      help=f"output directory (default RUN_DIR/{FIGURES_DIR}; needed for several "
                           f"runs)")

    evaluate = commands.add_parser(
        "evaluate", help="score a policy over N whole games under stated protocols, side by "
                         "side")
    evaluate.add_argument("target", nargs="?", type=Path, metavar="RUN_DIR|CHECKPOINT")
    shipped = shipped_agents()  # read once: three commands name them in their help
    _add_pretrained_option(evaluate, shipped)
    protocol = EvalProtocol()
    evaluate.add_argument("--games", type=int, default=protocol.games,
                          help=f"games to play (default {protocol.games})")
    evaluate.add_argument("--num-envs", type=int, default=protocol.num_envs,
                          help=f"parallel envs; each plays its share of the games (default "
                               f"{protocol.num_envs})")
    evaluate.add_argument("--policy", choices=("trained", "random"), default="trained",
                          help=f"random: the uniform-random baseline ({RANDOM_EVALUATION_FILE})")
    evaluate.add_argument("--game", default=None,
                          help="the game of a random baseline evaluated without a run")
    evaluate.add_argument("--out", type=Path, default=None,
                          help=f"where the JSON goes (default RUN_DIR/{EVALUATION_FILE})")
    evaluate.add_argument("--env-threads", type=int, default=0,
                          help="emulator threads (default 0: one per core); scores do not "
                               "depend on it")
    evaluate.add_argument("--protocols", default=None, metavar="LIST",
                          help=f"the ways of playing, side by side in one table, from "
                               f"{', '.join(PROTOCOLS)} (default {','.join(SIDE_BY_SIDE)}; "
                               f"--greedy or --sticky play only that one)")
    _add_play_options(evaluate, protocol)

    record = commands.add_parser(
        "record", help="MP4 of whole games with the agent's action values beside the screen")
    record.add_argument("target", nargs="?", type=Path, metavar="RUN_DIR|CHECKPOINT")
    _add_pretrained_option(record, shipped)
    settings = RecordSettings()
    record.add_argument("--games", type=int, default=settings.protocol.games,
                        help=f"games to record (default {settings.protocol.games})")
    record.add_argument("--scale", type=int, default=settings.scale,
                        help=f"screen upscaling, 1 to 4 (default {settings.scale})")
    record.add_argument("--gif", action="store_true",
                        help="also a GIF, one frame per agent step at 15 fps")
    record.add_argument("--out", type=Path, default=None,
                        help=f"the .mp4 to write (default RUN_DIR/{VIDEO_FILE})")
    _add_play_options(record, settings.protocol)

    report = commands.add_parser("report", help="one self-contained HTML page about the runs, "
                                                "or about a study")
    report.add_argument("runs", nargs="*", type=Path, metavar="RUN_DIR|STUDY_DIR")
    _add_pretrained_option(report, shipped)
    _add_x_option(report)
    report.add_argument("--out", type=Path, default=None,
                        help=f"the .html to write (default RUN_DIR/{REPORT_FILE}; needed "
                             f"for several runs)")


def _add_x_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--x", choices=("steps", "games"), default="steps",
                        help="x axis of the figures: agent steps or games played (default steps)")


def _add_pretrained_option(parser: argparse.ArgumentParser, shipped: list[str]) -> None:
    parser.add_argument("--pretrained", metavar="NAME", default=None,
                        help=f"an agent shipped in pretrained/ ({', '.join(shipped)}) "
                             "instead of a run; "
                             f"what is written goes to {PRETRAINED_OUTPUT}-NAME/")


def _pretrained(args: argparse.Namespace, filename: str) -> None:
    """Point the command at a shipped agent; its outputs go under runs/, not into the
    repository's pretrained/ folder."""
    from atari_rl.policy import pretrained_dir

    targets = getattr(args, "target", None) or getattr(args, "runs", None)
    if args.pretrained is None:
        if not targets and not getattr(args, "game", None):
            what = "RUN_DIR" if args.command == "report" else "RUN_DIR or CHECKPOINT"
            raise UsageError(f"give a {what} to {args.command}, or --pretrained "
                             f"NAME" + (" (or --policy random --game GAME for a baseline)"
                                       if args.command == "evaluate" else ""))
        return
    if targets:
        raise UsageError("give either a run directory or --pretrained, not both")
    path = _usage(pretrained_dir, args.pretrained)
    if hasattr(args, "runs"):
        args.runs = [path]
    else:
        args.target = path
    if args.out is None:
        args.out = Path(f"{PRETRAINED_OUTPUT}-{args.pretrained}") / filename
        args.out.parent.mkdir(parents=True, exist_ok=True)


def _add_play_options(parser: argparse.ArgumentParser, defaults: EvalProtocol) -> None:
    """The evaluation protocol's settings, shared by evaluate and record."""
    from atari_rl.evaluation import STICKY_ACTION_PROB
    from atari_rl.media import SCREEN_FPS

    minutes = defaults.max_frames_per_game / SCREEN_FPS / 60
    group = parser.add_argument_group("protocol")
    group.add_argument("--seed", type=int, default=defaults.seed,
                       help=f"seeds the emulators, the no-ops and epsilon's random actions: "
                            f"the same seed plays the same games (default {defaults.seed})")
    group.add_argument("--greedy", action="store_true", default=defaults.greedy,
                       help="always the best action (default epsilon-greedy)")
    group.add_argument("--epsilon", type=float, default=defaults.epsilon,
                       help=f"random action probability when not greedy (default "
                            f"{defaults.epsilon:g})")
    group.add_argument("--sticky", action="store_true",
                       help=f"sticky actions with probability {STICKY_ACTION_PROB:g} (Machado "
                            f"et al. 2018)")
    group.add_argument("--noop-max", type=int, default=defaults.noop_max,
                       help=f"up to this many no-op frames at the start of a game (default "
                            f"{defaults.noop_max})")
    group.add_argument("--max-frames", type=int, default=defaults.max_frames_per_game,
                       help=f"frame cap per game (default {defaults.max_frames_per_game:,}: "
                            f"{minutes:g} minutes of play)")


def _protocol_names(args: argparse.Namespace, protocol: EvalProtocol, random: bool) -> list[str]:
    """The protocols to play: --protocols, else the one --greedy/--sticky ask for, else the
    three side by side (one for random play, which neither exploits nor explores)."""
    from atari_rl.evaluation import PROTOCOLS, SIDE_BY_SIDE, protocol_name

    if args.protocols is not None:
        if args.greedy or args.sticky:
            raise UsageError("give either --protocols or --greedy/--sticky, not both")
        names = [name.strip() for name in args.protocols.split(",") if name.strip()]
        unknown = [name for name in names if name not in PROTOCOLS]
        if unknown or not names:
            raise UsageError(f"--protocols: unknown protocol '{unknown[0] if unknown else ''}' "
                             f"(choose from {', '.join(PROTOCOLS)})")
        return list(dict.fromkeys(names))
    if args.greedy or args.sticky or random:
        return [protocol_name(protocol)]
    return list(SIDE_BY_SIDE)


def _source(args: argparse.Namespace) -> str:
    """What was played, as written into evaluation.json and video.json: a shipped agent's
    name or a path relative to where the command ran, never the absolute path of the
    machine it ran on (shipped files travel)."""
    if args.pretrained:
        return f"pretrained/{args.pretrained}"
    target = args.target
    if target is None:
        return ""
    try:
        return str(target.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return target.name


def _protocol(args: argparse.Namespace, defaults: EvalProtocol) -> EvalProtocol:
    """The protocol the play options ask for; what they leave out stays as in defaults."""
    from atari_rl.evaluation import STICKY_ACTION_PROB

    return dataclasses.replace(
        defaults, games=args.games, num_envs=getattr(args, "num_envs", defaults.num_envs),
        seed=args.seed, greedy=args.greedy, epsilon=args.epsilon, noop_max=args.noop_max,
        sticky_action_prob=STICKY_ACTION_PROB if args.sticky else defaults.sticky_action_prob,
        max_frames_per_game=args.max_frames)


def cmd_train(args: argparse.Namespace) -> int:
    from atari_rl.algorithms import get
    from atari_rl.checkpoints import is_run_dir, new_run_dir, read_json
    from atari_rl.cores import measure_free_cores
    from atari_rl.envs import AtariPipeline
    from atari_rl.networks import pick_device
    from atari_rl.training import CliffStopped, TrainingStopped, latest_checkpoint, train

    overrides = {f: getattr(args, f) for f in _config_field_names() if getattr(args, f) is not None}
    try:
        if args.resume is not None:
            run_dir = args.resume
            if not is_run_dir(run_dir):
                raise ValueError(f"{run_dir} is not a run directory (no {CONFIG_FILE}): "
                                 f"give the directory a run was trained in")
            changed = sorted(set(overrides) - RESUME_OPTIONS) + (["algo"] if args.algo else [])
            if changed or args.preset or args.run_dir:
                raise ValueError("a resumed run keeps its settings: only --steps, "
                                 "--torch-threads and --env-threads may be given with --resume")
            config = cfg.from_dict({**read_json(run_dir / CONFIG_FILE), **overrides})
            latest_checkpoint(run_dir)
        else:
            config = cfg.resolve(args.algo, args.preset, overrides)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            run_dir = args.run_dir or Path("runs") / f"{config.algo}-{config.game}-{stamp}"
        pick_device(config.device)
        check_machine = get(config.algo).check_machine
        if args.resume is None and check_machine is not None:
            check_machine(config)  # the replay memory fits, say
        # threads 0: the cores free now, counted once (half a second) for both
        free = measure_free_cores() if 0 in (config.env_threads, config.torch_threads) else None
        env = AtariPipeline(dataclasses.replace(config.env_config(),
                                                num_threads=config.env_threads or free))
        if args.resume is None:
            new_run_dir(run_dir)
    except ValueError as error:
        raise UsageError(str(error)) from None
    verb = "resuming" if args.resume else "training"
    threads = _threads_line(config, free, resumed_as_saved=args.resume is not None
                            and not RESUME_THREADS & set(overrides))
    print(f"{verb} {config.algo} on {config.game} for {config.steps:,} agent steps "
          f"in {run_dir}; {threads}", file=sys.stderr)
    try:
        summary = train(config, run_dir, env, resume=args.resume is not None, free_cores=free)
    except CliffStopped as stopped:
        print(f"atari-rl: {stopped}; checkpoint saved in {run_dir}; the best checkpoint is "
              f"kept: see {EVENTS_FILE}", file=sys.stderr)
        return CLIFF_STOP
    except TrainingStopped as stopped:
        print(f"atari-rl: {stopped}; checkpoint saved: continue with "
              f"`atari-rl train --resume {run_dir}`", file=sys.stderr)
        return 128 + stopped.signal_number
    except OSError as error:
        raise UsageError(f"could not write to {run_dir} ({error.strerror or error}): free "
                         f"space and continue with --resume {run_dir}; the earlier "
                         f"checkpoints are intact") from None
    except ValueError as error:  # a checkpoint that cannot be resumed from
        raise UsageError(str(error)) from None
    finally:
        env.close()
    print(json.dumps({"run_dir": str(run_dir), **summary}))
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from atari_rl.study import DEFAULT_OUT, STUDY_FILE, apply_command_line, load_spec
    from atari_rl.study_run import run_study

    spec = _usage(load_spec, args.spec)
    _usage(apply_command_line, spec, args.seeds, args.steps, args.games, args.configurations,
           args.cpus_per_trial)
    resuming = (Path(args.spec) / STUDY_FILE).is_file()  # SPEC is a study directory
    out = args.out or (Path(args.spec) if resuming else DEFAULT_OUT / f"study-{spec.name}")
    return _usage(run_study, spec, out, args.address or os.environ.get("RAY_ADDRESS"))


def cmd_presets(args: argparse.Namespace) -> int:
    from atari_rl.algorithms import presets

    width = max(len(name) for name in presets()) + 1
    for preset in presets().values():
        changes = ", ".join(f"{k}={v}" for k, v in preset.changes.items()) or "the defaults"
        print(f"{preset.name:<{width}} {preset.algo:<4} {preset.summary}\n"
              f"{'':{width + 5}}{changes}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from atari_rl.plots import label_runs, load_run, write_figures
    from atari_rl.study_stats import is_study_dir

    if len(args.runs) == 1 and is_study_dir(args.runs[0]):
        from atari_rl.study_plots import write_study_figures

        for path in _usage(write_study_figures, args.runs[0], args.out):
            print(path)
        return 0
    if len(args.runs) > 1 and args.out is None:
        raise UsageError("several runs need --out DIR for their figures")
    runs = [_usage(load_run, path) for path in args.runs]
    if not any(run.metrics or run.games for run in runs):
        raise UsageError(f"{args.runs[0]} has no {METRICS_FILE} or {GAMES_FILE} rows yet")
    label_runs(runs)
    out = args.out or args.runs[0] / FIGURES_DIR
    for path in write_figures(runs, out, args.x):
        print(path)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from atari_rl.checkpoints import write_json
    from atari_rl.envs import game_id
    from atari_rl.evaluation import EvalProtocol, evaluate_protocols, format_result, format_table
    from atari_rl.policy import RandomPolicy, action_names, load_policy

    random = args.policy == "random"
    filename = RANDOM_EVALUATION_FILE if random else EVALUATION_FILE
    _pretrained(args, filename)
    protocol = _protocol(args, EvalProtocol())
    _usage(protocol.validate)
    names = _protocol_names(args, protocol, random)
    if args.game and args.target is not None:
        raise UsageError("--game applies only to --policy random without a run: the run's "
                         "game is used")
    if random:
        game = _usage(game_id, args.game) if args.game else _usage(_target_game, args.target)
        actor: Any = RandomPolicy(game, len(action_names(game)),
                                  np.random.default_rng(args.seed))
    else:
        actor = _usage(load_policy, args.target)
        actor.epsilon, actor.rng = args.epsilon, np.random.default_rng(args.seed)
        game = actor.game
    out = args.out
    if out is None and args.target is not None:
        out = _beside(args.target, filename)
    print(f"evaluating the {args.policy} policy on {game}: {protocol.games} games over "
          f"{protocol.envs_used} envs, protocols {', '.join(names)}", file=sys.stderr)
    if args.env_threads < 0:
        raise UsageError("--env-threads must be 0 (one per core) or more")
    results = evaluate_protocols(actor, game, protocol, names, args.env_threads)
    # The first protocol's numbers are the headline, at the top level, where every reader
    # of evaluation.json finds them; all of them, every game's score included, under
    # "protocols".
    result = {"policy": args.policy, "source": _source(args),
              **results[names[0]], "protocols": results}
    print(format_result(results[names[0]]) if len(names) == 1 else format_table(results))
    if out is not None:
        write_json(out, result)
        print(f"saved {out}", file=sys.stderr)
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    from atari_rl.checkpoints import write_json
    from atari_rl.media import RecordSettings, record
    from atari_rl.policy import load_policy

    _pretrained(args, VIDEO_FILE)
    settings = RecordSettings(_protocol(args, RecordSettings().protocol), scale=args.scale)
    _usage(settings.validate)
    if args.out is not None and args.out.suffix != ".mp4":
        raise UsageError(f"--out must name an .mp4 file, not {args.out}")
    policy = _usage(load_policy, args.target)
    policy.epsilon = args.epsilon
    video = args.out or _beside(args.target, VIDEO_FILE)
    gif = video.with_suffix(GIF_SUFFIX) if args.gif else None
    print(f"recording {settings.protocol.games} game(s) of {policy.game} into {video}",
          file=sys.stderr)
    info = record(policy, policy.game, video, settings, gif)
    write_json(video.with_suffix(VIDEO_INFO_SUFFIX), {"source": _source(args), **info})
    scores = ", ".join(f"{g['score']:g}" for g in info["games"])
    print(f"{video}: {info['frames']:,} frames at {info['fps']} fps, one per emulator frame; "
          f"scores {scores}" + (f"; {gif}: {info['gif_frames']:,} frames at "
                                f"{info['gif_fps']} fps, one per agent step" if gif else ""))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from atari_rl.report import load_runs, write_report
    from atari_rl.study_stats import is_study_dir

    _pretrained(args, REPORT_FILE)
    if len(args.runs) == 1 and is_study_dir(args.runs[0]):
        from atari_rl.study_report import write_study_report

        if args.out is not None and args.out.suffix != ".html":
            raise UsageError(f"--out must name an .html file, not {args.out}")
        print(_usage(write_study_report, args.runs[0], args.out))
        return 0
    if len(args.runs) > 1 and args.out is None:
        raise UsageError("several runs need --out FILE.html for their report")
    if args.out is not None and args.out.suffix != ".html":
        raise UsageError(f"--out must name an .html file, not {args.out}")
    runs = _usage(load_runs, args.runs)
    out = write_report(runs, args.out or args.runs[0] / REPORT_FILE, args.x)
    print(out)
    return 0


def _usage(function: Any, *args: Any) -> Any:
    """Call function; a ValueError it raises is the user's input, reported as one line."""
    try:
        return function(*args)
    except ValueError as error:
        raise UsageError(str(error)) from None


def _target_game(target: Path) -> str:
    """The game of a run directory or a policy file, without needing the run's policy."""
    from atari_rl.checkpoints import is_run_dir, read_json
    from atari_rl.envs import game_id
    from atari_rl.policy import load_policy

    if target.is_dir() and is_run_dir(target):
        return game_id(read_json(target / CONFIG_FILE).get("game", ""))
    return load_policy(target).game


def _threads_line(config: cfg.RunConfig, free: int | None, resumed_as_saved: bool) -> str:
    """The threads a run uses. A resumed run keeps the counts it was started with (an exact
    resume needs them), which surprises a user who resumes alone a run that shared the
    machine, so the line says how to change them."""
    learner = config.torch_threads or f"one per free core ({free} now)"
    line = f"learner threads: {learner}, emulator threads: {config.env_threads or free}"
    if resumed_as_saved and (config.torch_threads or config.env_threads):
        line += (" (the run's own; --torch-threads 0 --env-threads 0 take the cores that "
                 "are free)")
    return line


def _beside(target: Path, name: str) -> Path:
    """Output next to what was played: inside a run directory, beside a checkpoint directory
    (never inside it: old checkpoints are pruned) or beside a policy file."""
    from atari_rl.checkpoints import is_run_dir

    if is_run_dir(target):
        return target / name
    if target.name == CHECKPOINT_TENSORS:
        target = target.parent
    return target.with_name(f"{target.stem}.{name}")


def _config_field_names() -> set[str]:
    from atari_rl.algorithms import algorithms

    fields = {f.name for a in algorithms().values() for f in dataclasses.fields(a.config)}
    return fields - {"algo", "preset"}


COMMANDS = {"train": cmd_train, "presets": cmd_presets, "study": cmd_study, "plot": cmd_plot,
            "evaluate": cmd_evaluate, "record": cmd_record, "report": cmd_report}


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except UsageError as error:
        print(f"atari-rl: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print("atari-rl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
