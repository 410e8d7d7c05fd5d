"""The registry of algorithms: each one declares, in its own module, all that the rest needs.

An algorithm module (a2c.py, dqn.py, ppo.py) builds one `Algorithm` and registers it. The
command line, training, policy loading, figures, videos and the cliff detector read this
registry, and none of them names an algorithm: adding one is its module, its maths and its
tests, and its module's name in MODULES.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

    from atari_rl.config import Preset, RunConfig
    from atari_rl.plots import FigureSpec

MODULES = ("atari_rl.a2c", "atari_rl.dqn", "atari_rl.ppo")
# What a network's outputs are, which decides how a policy acts and what a video draws.
PROBABILITIES = "action probabilities"  # an actor: softmax of its logits; actions can be drawn
Q_VALUES = "Q-values"  # a value per action: the greedy action is the best one


@dataclass(frozen=True)
class CliffSignals:
    """Which of an algorithm's statistics the cliff detector reads."""

    loss: str  # the critic's (or TD) loss, whose explosion the write-up saw before a collapse
    entropy: str | None  # the policy's entropy; None where there is no policy distribution
    # Statistics whose non-finite value means a broken network (others, such as the
    # explained variance of a constant target, can be NaN in a healthy run).
    watched: tuple[str, ...]


@dataclass(frozen=True)
class Algorithm:
    name: str  # --algo, and "algo" in config.json and in a policy file's metadata
    title: str  # for captions: "A2C", "Double DQN"
    config: type[RunConfig]  # its config dataclass, whose defaults are its best settings
    presets: tuple[Preset, ...]
    # (config, num_actions, device) -> the `training.Agent` that learns
    make_agent: Callable[[Any, int, torch.device], Any]
    # A policy file's tensors -> (network, num_actions), or None when they are not this
    # algorithm's network
    load_network: Callable[[dict[str, torch.Tensor]], tuple[nn.Module, int] | None]
    outputs: str  # PROBABILITIES or Q_VALUES
    figures: tuple[FigureSpec, ...]  # the panels its statistics get, merged by figure name
    cliff: CliffSignals
    # Before a run starts (never when a saved config is read back): can this machine hold
    # it? ValueError with one line if not.
    check_machine: Callable[[Any], None] | None = None


_REGISTRY: dict[str, Algorithm] = {}


def register(algorithm: Algorithm) -> Algorithm:
    _REGISTRY[algorithm.name] = algorithm
    return algorithm


def algorithms() -> dict[str, Algorithm]:
    """Every algorithm, by name, in MODULES' order."""
    for module in MODULES:
        importlib.import_module(module)
    return {name: _REGISTRY[name] for name in sorted(_REGISTRY, key=_order)}


def get(name: str) -> Algorithm:
    found = algorithms().get(name)
    if found is None:
        raise ValueError(f"unknown algorithm '{name}': choose one of "
                         f"{', '.join(algorithms())}")
    return found


def presets() -> dict[str, Preset]:
    """Every algorithm's presets by name."""
    return {p.name: p for algorithm in algorithms().values() for p in algorithm.presets}


def _order(name: str) -> int:
    modules = [m.rsplit(".", 1)[1] for m in MODULES]
    return modules.index(name) if name in modules else len(modules)
