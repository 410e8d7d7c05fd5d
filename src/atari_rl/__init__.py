"""atari-rl: deep RL agents (A2C, Double DQN) that learn Atari games from pixels.

`load_policy` is imported on first use, so that `import atari_rl.config` (and the CLI's
start) does not pay for importing torch.
"""

from __future__ import annotations

import os
from importlib import metadata
from typing import TYPE_CHECKING, Any

from atari_rl.heap import keep_freed_memory

# GNU OpenMP, torch's thread pool on Linux, keeps its threads spinning for some 300,000
# rounds after each parallel region before they sleep; on a small machine that spinning
# takes the cores from the emulator threads that step next (README, "Why the speed-ups
# stop where they do"). libgomp reads this when torch loads, so it is set here, before
# any module of the package imports torch. A value already in the environment wins.
os.environ.setdefault("GOMP_SPINCOUNT", "20000")
keep_freed_memory()  # torch's large buffers reuse pages instead of faulting in new ones

if TYPE_CHECKING:
    from atari_rl.policy import load_policy

try:
    __version__ = metadata.version("atari-rl")
except metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "load_policy"]


def __getattr__(name: str) -> Any:
    if name == "load_policy":
        from atari_rl.policy import load_policy

        return load_policy
    raise AttributeError(f"module 'atari_rl' has no attribute '{name}'")
