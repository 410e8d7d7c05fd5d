"""Trained policies, loaded for playing from a run directory or a .safetensors file.

Evaluation, videos and anyone's own script load a policy the same way: `load_policy(path)`.
Loading reads safetensors and JSON only, never pickle, so a policy file from a stranger
cannot run code. What the file holds decides what is built: the metadata (algo, game,
num_actions) written by training, and else the tensor names, which each registered
algorithm's `load_network` recognises or not (`algorithms.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from atari_rl.algorithms import PROBABILITIES, algorithms
from atari_rl.checkpoints import NETWORK_PREFIX, is_run_dir, read_json, save_tensors
from atari_rl.envs import game_id
from atari_rl.networks import FIRST_CONV
from atari_rl.run_files import (
    CHECKPOINT_DIR,
    CHECKPOINT_STATE,
    CHECKPOINT_TENSORS,
    CONFIG_FILE,
    FINAL_POLICY,
    PRETRAINED_ROOT,
    shipped_agents,
)

EVAL_EPSILON = 0.01  # the Nature DQN evaluation protocol's epsilon
# A policy file's names, a checkpoint's learning network (not a target network), and a
# network saved while torch.compile wrapped it.
_PREFERRED_PREFIXES = ("", f"{NETWORK_PREFIX}.", "_orig_mod.")


class PolicyError(ValueError):
    """A path that holds no policy we can load; the message is one line saying why."""


@cache
def action_names(game: str) -> tuple[str, ...]:
    """The game's minimal action set as named by ALE (NOOP, FIRE, RIGHT, LEFT for Breakout).

    Training plays the minimal set, so its size is the policy's number of actions.
    """
    import ale_py
    from ale_py import roms

    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    ale = ale_py.ALEInterface()
    ale.loadROM(roms.get_rom_path(game_id(game)))
    return tuple(action.name for action in ale.getMinimalActionSet())


def policy_metadata(algo: str, game: str, num_actions: int) -> dict[str, str]:
    """What a policy file's safetensors metadata says, which `load_policy` reads back."""
    return {"algo": algo, "game": game, "num_actions": str(num_actions)}


def uniform_entropy(num_actions: int) -> float:
    """Entropy of the uniform policy in nats, ln(num_actions): the ceiling entropy can reach."""
    return math.log(num_actions)


@dataclass
class Policy:
    """A network that chooses actions for uint8 stacks [B, 4, 84, 84], as in training.

    `act(obs, greedy=False)` is epsilon-greedy with `epsilon` (0.01, the Nature DQN
    evaluation protocol) for every algorithm, so that an agent stuck in a loop gets out;
    `rng` makes those draws reproducible.
    """

    algo: str
    game: str
    num_actions: int
    network: nn.Module
    source: Path
    epsilon: float = EVAL_EPSILON
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))

    @property
    def action_names(self) -> tuple[str, ...]:
        return action_names(self.game)

    def save(self, path: Path) -> None:
        """The network's weights alone, as a policy file that `load_policy` reads (a
        checkpoint's policy without its optimizer's moments, for shipping or copying)."""
        save_tensors(path, self.network.state_dict(),
                     policy_metadata(self.algo, self.game, self.num_actions))

    @property
    def values_label(self) -> str:
        """What `action_values` returns (the algorithm's outputs), for labels and captions."""
        return algorithms()[self.algo].outputs

    @torch.inference_mode()
    def action_values(self, obs: np.ndarray) -> np.ndarray:
        """float32 [B, A]: action probabilities (an actor's softmax of its logits) or Q-values."""
        output = self.network(torch.from_numpy(_check_obs(obs)))
        if self.values_label == PROBABILITIES:
            return torch.softmax(output[0].float(), dim=1).numpy()
        return output.float().numpy()

    def act(self, obs: np.ndarray, greedy: bool = True, sample: bool = False) -> np.ndarray:
        """int64 [B]: the best action of each stack, or epsilon-greedy when greedy is False.

        `sample=True` draws each action from an actor's probabilities instead, as during
        its training (Q-values are no distribution to draw from: they stay as above).
        """
        values = self.action_values(obs)
        if sample and self.values_label == PROBABILITIES:
            cumulative = values.cumsum(axis=1)
            draws = self.rng.random((len(values), 1)) * cumulative[:, -1:]
            return (draws > cumulative).sum(axis=1).astype(np.int64)
        actions = values.argmax(axis=1).astype(np.int64)
        if not greedy and self.epsilon > 0:
            explore = self.rng.random(len(actions)) < self.epsilon
            actions[explore] = self.rng.integers(0, self.num_actions, int(explore.sum()))
        return actions


@dataclass
class RandomPolicy:
    """Uniformly random actions: the baseline every result is compared with."""

    game: str
    num_actions: int
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    algo: str = "random"
    values_label: str = PROBABILITIES

    @property
    def action_names(self) -> tuple[str, ...]:
        return action_names(self.game)

    def action_values(self, obs: np.ndarray) -> np.ndarray:
        return np.full((len(obs), self.num_actions), 1.0 / self.num_actions, dtype=np.float32)

    def act(self, obs: np.ndarray, greedy: bool = True) -> np.ndarray:
        return self.rng.integers(0, self.num_actions, len(obs)).astype(np.int64)


def pretrained_dir(name: str) -> Path:
    """The directory of an agent shipped in the repository's pretrained/ folder."""
    path = PRETRAINED_ROOT / name
    if "/" in name or not (path / CONFIG_FILE).is_file():
        names = ", ".join(shipped_agents()) or "none in this installation"
        raise PolicyError(f"unknown pretrained agent '{name}': available: {names}")
    return path


def load_policy(path: str | Path) -> Policy:
    """The policy of a shipped agent by name (`load_policy("breakout-a2c")`), of a run
    directory (policy.safetensors + config.json), of one of its checkpoints
    (RUN/checkpoints/step-N/, whose network tensors are prefixed `network.`), or of a
    .safetensors file whose metadata names the algorithm and game.

    Raises PolicyError, a ValueError, with one line naming the problem.
    """
    if isinstance(path, str) and not Path(path).exists() and "/" not in path:
        path = pretrained_dir(path)
    path = Path(path)
    file, config = _locate(path)
    tensors, meta = _read_safetensors(file)
    tensors = _strip_prefix(tensors, file)
    algo = meta.get("algo") or config.get("algo") or _algo_from_names(tensors)
    game = meta.get("game") or config.get("game")
    if not game:
        raise PolicyError(f"{file} does not say which game it plays (no 'game' in its metadata)")
    try:
        game = game_id(game)
    except ValueError as error:
        raise PolicyError(f"{file}: {error}") from None
    network, num_actions = _build_network(algo, tensors, file)
    if meta.get("num_actions") and int(meta["num_actions"]) != num_actions:
        raise PolicyError(f"{file} says num_actions={meta['num_actions']} but its head has "
                          f"{num_actions} outputs")
    if num_actions != len(action_names(game)):
        raise PolicyError(f"{file} has {num_actions} actions but {game} has "
                          f"{len(action_names(game))}")
    return Policy(algo=algo, game=game, num_actions=num_actions, network=network, source=path)


def _locate(path: Path) -> tuple[Path, dict]:
    """The tensor file and what says which algorithm and game (a run's or checkpoint's JSON)."""
    if path.name == CHECKPOINT_TENSORS and (path.parent / CHECKPOINT_STATE).is_file():
        path = path.parent  # a checkpoint's tensors: read its state.json too
    if path.is_dir():
        if (path / CHECKPOINT_TENSORS).is_file():  # RUN/checkpoints/step-N/
            state = path / CHECKPOINT_STATE
            return path / CHECKPOINT_TENSORS, read_json(state) if state.is_file() else {}
        if not is_run_dir(path):
            raise PolicyError(f"{path} is not a run directory (it has no {CONFIG_FILE})")
        file = path / FINAL_POLICY
        if not file.is_file():
            raise PolicyError(f"run {path} has no {FINAL_POLICY} yet: training writes it when "
                              f"it ends (a checkpoint in {path / CHECKPOINT_DIR} can be given "
                              f"instead)")
        return file, read_json(path / CONFIG_FILE)
    if not path.exists():
        raise PolicyError(f"{path} does not exist")
    if path.suffix != ".safetensors":
        raise PolicyError(f"{path} is neither a run directory nor a .safetensors file")
    return path, {}


def _read_safetensors(file: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(file), framework="pt") as handle:
            meta = handle.metadata() or {}
            return {name: handle.get_tensor(name) for name in handle.keys()}, meta  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as error:
        raise PolicyError(f"{file} is not a readable safetensors file ({error})") from None


def _strip_prefix(tensors: dict[str, torch.Tensor], file: Path) -> dict[str, torch.Tensor]:
    """The network's own names, for checkpoints that nest it (`network.torso.0.weight`)."""
    prefixes = [name[: -len(FIRST_CONV)] for name in tensors if name.endswith(FIRST_CONV)]
    if not prefixes:
        raise PolicyError(f"{file} holds no Nature-CNN network (no tensor named {FIRST_CONV})")
    chosen = next((p for p in _PREFERRED_PREFIXES if p in prefixes), prefixes[0])
    if chosen not in _PREFERRED_PREFIXES and len(prefixes) > 1:
        raise PolicyError(f"{file} holds several networks ({', '.join(prefixes)}): "
                          f"cannot tell which one plays")
    return {name[len(chosen):]: t for name, t in tensors.items() if name.startswith(chosen)}


def _algo_from_names(tensors: dict[str, torch.Tensor]) -> str:
    """The first registered algorithm whose network the tensors fit (files without metadata;
    A2C and PPO share a network, and such a file plays the same under either)."""
    for name, algorithm in algorithms().items():
        if algorithm.load_network(tensors) is not None:
            return name
    raise PolicyError(f"cannot tell the algorithm: no metadata, and the tensors fit none of "
                      f"{', '.join(algorithms())}")


def _build_network(algo: str, tensors: dict[str, torch.Tensor],
                   file: Path) -> tuple[nn.Module, int]:
    algorithm = algorithms().get(algo)
    built = algorithm.load_network(tensors) if algorithm else None
    if built is None:
        raise PolicyError(f"{file} is labelled '{algo}' but does not hold that network")
    network, num_actions = built
    try:
        network.load_state_dict(tensors)
    except RuntimeError as error:
        first_line = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise PolicyError(f"{file} does not match the {algo} network: {first_line}") from None
    return network.eval(), num_actions


def _check_obs(obs: np.ndarray) -> np.ndarray:
    if obs.dtype != np.uint8 or obs.ndim != 4:
        raise ValueError(f"observations must be uint8 [batch, frames, 84, 84], not "
                         f"{obs.dtype} {list(obs.shape)}")
    return np.ascontiguousarray(obs)
