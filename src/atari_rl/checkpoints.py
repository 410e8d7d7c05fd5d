"""Run directories and checkpoints that a crash cannot corrupt and a stranger cannot exploit.

Tensors go into safetensors and everything else into JSON: loading never unpickles, so a
checkpoint downloaded from someone else cannot run code. Every file is written to a
temporary name, fsynced and renamed, so a kill at any moment leaves the previous version.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from atari_rl.run_files import (
    BEST_FILE,
    CHECKPOINT_DIR,
    CHECKPOINT_STATE,
    CHECKPOINT_TENSORS,
    CONFIG_FILE,
)


def atomic_write(path: Path, write: Any) -> None:
    """Call write(temporary_path), then fsync and rename it over path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        write(temporary)
        with temporary.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_directory(path.parent)


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=2) + "\n"))


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    cpu = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    atomic_write(path, lambda p: save_file(cpu, str(p), metadata=meta))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def is_run_dir(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file()


def new_run_dir(path: Path) -> Path:
    """Create the directory of a new run; refuses one that holds anything already."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ValueError(f"run directory {path} already exists: choose another --run-dir, "
                         f"or continue it with --resume {path}")
    path.mkdir(parents=True, exist_ok=True)
    return path


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with what to do about it, in one line."""


def checkpoint_name(step: int) -> str:
    return f"step-{step:012d}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Finished checkpoints of a run, oldest first (temporary directories are not listed)."""
    directory = run_dir / CHECKPOINT_DIR
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.is_dir() and p.name.startswith("step-"))


def save_checkpoint(run_dir: Path, step: int, tensors: dict[str, torch.Tensor],
                    state: dict[str, Any], keep: int, score: float,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint directory atomically and prune old ones, keeping the best.

    The directory is filled under a temporary name and renamed when every file is on
    disk, so a kill or a full disk leaves either the whole checkpoint or none of it.
    `extra` maps file names to functions that write them (a replay memory, say).
    """
    directory = run_dir / CHECKPOINT_DIR
    final = directory / checkpoint_name(step)
    temporary = directory / f".tmp-{final.name}"
    _remove_tree(temporary)
    temporary.mkdir(parents=True)
    try:
        save_tensors(temporary / CHECKPOINT_TENSORS, tensors, {"step": str(step)})
        write_json(temporary / CHECKPOINT_STATE, {"step": step, **state})
        for name, write in (extra or {}).items():
            atomic_write(temporary / name, write)
        replaced = directory / f".old-{final.name}"
        if final.exists():  # the same step saved again (a resumed run that was finished)
            os.replace(final, replaced)
        os.replace(temporary, final)
        _fsync_directory(directory)
        _remove_tree(replaced)
    except BaseException:
        _remove_tree(temporary)
        raise
    best = best_checkpoint(run_dir)
    best_score = read_json(directory / BEST_FILE)["score"] if best else None
    if best is None or (math.isfinite(score) and (best_score is None or score > best_score)):
        write_json(directory / BEST_FILE, {"checkpoint": final.name,
                                           "score": score if math.isfinite(score) else None})
        best = final
    for old in list_checkpoints(run_dir)[:-keep]:
        if old != best:
            _remove_tree(old)
    return final


def best_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint with the best rolling score, if its directory still exists."""
    pointer = run_dir / CHECKPOINT_DIR / BEST_FILE
    if not pointer.is_file():
        return None
    path = run_dir / CHECKPOINT_DIR / read_json(pointer)["checkpoint"]
    return path if path.is_dir() else None


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and state of a checkpoint directory; CheckpointError if it is damaged."""
    advice = f"delete {path} to resume from the checkpoint before it"
    for name in (CHECKPOINT_STATE, CHECKPOINT_TENSORS):
        if not (path / name).is_file():
            raise CheckpointError(f"checkpoint {path} is incomplete ({name} missing): {advice}")
    try:
        state = read_json(path / CHECKPOINT_STATE)
        tensors = load_tensors(path / CHECKPOINT_TENSORS)
    except Exception as error:  # safetensors and json report damage in many ways
        raise CheckpointError(f"checkpoint {path} is corrupt ({type(error).__name__}): "
                              f"{advice}") from None
    return tensors, state


def optimizer_state(optimizer: torch.optim.Optimizer, prefix: str
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's state as tensors for safetensors and plain values for JSON."""
    full = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in full["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    # A compiled optimizer's lr is a tensor (dqn's compile_step): JSON takes its number.
    groups = [{key: value.item() if isinstance(value, torch.Tensor) else value
               for key, value in group.items()} for group in full["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def load_optimizer_state(optimizer: torch.optim.Optimizer, prefix: str,
                         tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith(f"{prefix}."):
            index, key = name[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(index), {})[key] = value
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    # Saved contiguous, the moments go back into their parameter's layout (PPO's are
    # channels_last): a fused optimizer walks a parameter and its moments as one layout.
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                if isinstance(value, torch.Tensor) and value.shape == param.shape:
                    optimizer.state[param][key] = torch.empty_like(param).copy_(value)


NETWORK_PREFIX = "network"  # the learning network's tensors in a checkpoint (a target's differ)


def learner_state(network: torch.nn.Module, optimizer: torch.optim.Optimizer
                  ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """What every agent saves: its network's weights and its optimizer's moments."""
    optimizer_tensors, optimizer_meta = optimizer_state(optimizer, "optimizer")
    return ({**with_prefix(NETWORK_PREFIX, network.state_dict()), **optimizer_tensors},
            {"optimizer": optimizer_meta})


def load_learner_state(network: torch.nn.Module, optimizer: torch.optim.Optimizer,
                       tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    network.load_state_dict(without_prefix(NETWORK_PREFIX, tensors))
    load_optimizer_state(optimizer, "optimizer", tensors, meta["optimizer"])


def with_prefix(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{name}": value for name, value in tensors.items()}


def without_prefix(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    start = len(prefix) + 1
    return {name[start:]: value for name, value in tensors.items()
            if name.startswith(f"{prefix}.")}


def _remove_tree(path: Path) -> None:
    if path.is_dir():
        for child in path.iterdir():
            child.unlink()
        path.rmdir()


def _fsync_directory(path: Path) -> None:
    directory = os.open(path, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
