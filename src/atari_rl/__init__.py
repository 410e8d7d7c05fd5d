"""atari-rl: deep RL agents (A2C, Double DQN) that learn Atari games from pixels.

`load_policy` is imported on first use, so that `import atari_rl.config` (and the CLI's
start) does not pay for importing torch.
"""

from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING, Any

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
