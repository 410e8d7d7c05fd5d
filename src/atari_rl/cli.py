"""The `atari-rl` command.

Bad input ends in one line on stderr naming the problem and what to do, exit code 2,
and nothing written: every check runs before a run directory is created.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from atari_rl import config as cfg

USAGE_ERROR = 2


class UsageError(Exception):
    """A problem with what the user asked for, reported as one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _n_steps(text: str) -> int | str:
    try:
        return cfg.parse_n_steps(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _option_type(field: dataclasses.Field) -> dict[str, Any]:
    if field.name == "n_steps":
        return {"type": _n_steps, "metavar": "N|episode"}
    kind = {"int": int, "float": float, "str": str, "bool": bool}[str(field.type)]
    if kind is bool:
        return {"action": argparse.BooleanOptionalAction}
    return {"type": kind}


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per config field: the common ones, then each algorithm's own."""
    seen = {"algo"}
    groups = [("options of every algorithm", cfg.RunConfig)]
    groups += [(f"{algo} options", config_class) for algo, config_class in cfg.ALGORITHMS.items()]
    for title, config_class in groups:
        group = parser.add_argument_group(title)
        for field in dataclasses.fields(config_class):
            if field.name in seen:
                continue
            seen.add(field.name)
            group.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name,
                               default=None, help=f"default {field.default}",
                               **_option_type(field))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="atari-rl", description="Deep RL agents that learn Atari games "
                     "from pixels: A2C and Double DQN, fast on a CPU.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser("train", help="train an agent, writing a run directory")
    train.add_argument("--algo", choices=sorted(cfg.ALGORITHMS), default=None)
    train.add_argument("--preset", default=None, help="named settings: `atari-rl presets`")
    train.add_argument("--run-dir", type=Path, default=None,
                       help="where the run is written (default runs/ALGO-GAME-TIME)")
    _add_config_options(train)

    commands.add_parser("presets", help="list the named settings and what they change")
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from atari_rl.checkpoints import new_run_dir
    from atari_rl.envs import AtariPipeline
    from atari_rl.training import train

    overrides = {f: getattr(args, f) for f in _config_field_names() if getattr(args, f) is not None}
    try:
        config = cfg.resolve(args.algo, args.preset, overrides)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = args.run_dir or Path("runs") / f"{config.algo}-{config.game}-{stamp}"
        env = AtariPipeline(config.env_config())
        new_run_dir(run_dir)
    except ValueError as error:
        raise UsageError(str(error)) from None
    print(f"training {config.algo} on {config.game} for {config.steps:,} agent steps "
          f"in {run_dir}", file=sys.stderr)
    try:
        summary = train(config, run_dir, env)
    finally:
        env.close()
    print(json.dumps({"run_dir": str(run_dir), **summary}))
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    for preset in cfg.PRESETS.values():
        changes = ", ".join(f"{k}={v}" for k, v in preset.changes.items()) or "the defaults"
        print(f"{preset.name:<12} {preset.algo:<4} {preset.summary}\n{'':17}{changes}")
    return 0


def _config_field_names() -> set[str]:
    return {f.name for c in cfg.ALGORITHMS.values() for f in dataclasses.fields(c)} - {"algo"}


COMMANDS = {"train": cmd_train, "presets": cmd_presets}


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
