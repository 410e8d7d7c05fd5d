"""Run directories and checkpoints that a crash cannot corrupt and a stranger cannot exploit.

Tensors go into safetensors and everything else into JSON: loading never unpickles, so a
checkpoint downloaded from someone else cannot run code. Every file is written to a
temporary name, fsynced and renamed, so a kill at any moment leaves the previous version.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
FINAL_POLICY = "policy.safetensors"


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
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


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
