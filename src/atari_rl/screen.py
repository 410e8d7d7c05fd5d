"""One Atari game stepped frame by frame in Python, for videos: a model of ale-py's C++ env.

ale-py's vector env (`AtariVectorEnv`) preprocesses in C++ threads and never hands out the
RGB screen, which a video needs after every emulator frame. `ScreenEmulator` plays one game
directly on `ale_py.ALEInterface` and reproduces what that C++ env returns, so that
`envs.AtariPipeline` can run on top of it unchanged: the learning conventions (FIRE after a
life loss, the first frame repeated in the stack, which steps carry no transition) stay
written once, in the pipeline, and a video shows exactly what the agent was shown.

What is modelled here is only ale-py's own preprocessing (src/ale/vector/preprocessed_env.cpp):
FIRE at a game's reset, up to `noop_max` no-op frames, frameskip 4 with the maximum of the
last two frames, ALE's grayscale palette, OpenCV's INTER_AREA resize to 84x84 (with the same
float32 arithmetic), a stack that starts with zeros, `life_loss_info` terminations, the frame
cap, and NEXT_STEP autoreset. tests/test_media.py checks the pipeline over both, stack for
stack.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np

from atari_rl.envs import FRAME_SHAPE, FRAMESKIP, EnvConfig, game_id

SCREEN_SHAPE = (210, 160)

FrameSink = Callable[[np.ndarray], None]


@cache
def _area_table(source: int, target: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's INTER_AREA weights (computeResizeAreaTab), in its order and in float32.

    Returns source indices and weights [terms, target]; unused terms have weight 0.
    """
    scale = 1.0 / (target / source)
    terms: list[list[tuple[int, np.float32]]] = [[] for _ in range(target)]
    for out in range(target):
        start, end = out * scale, out * scale + scale
        cell = min(scale, source - start)
        first, last = math.ceil(start), min(math.floor(end), source - 1)
        first = min(first, last)
        if first - start > 1e-3:
            terms[out].append((first - 1, np.float32((first - start) / cell)))
        terms[out] += [(i, np.float32(1.0 / cell)) for i in range(first, last)]
        if end - last > 1e-3:
            terms[out].append((last, np.float32(min(end - last, 1.0, cell) / cell)))
    depth = max(len(t) for t in terms)
    index = np.zeros((depth, target), dtype=np.int64)
    weight = np.zeros((depth, target), dtype=np.float32)
    for out, column in enumerate(terms):
        for k, (i, w) in enumerate(column):
            index[k, out], weight[k, out] = i, w
    return index, weight


def resize_area(frame: np.ndarray) -> np.ndarray:
    """uint8 [210, 160] -> [84, 84] bit for bit as cv2.resize(..., INTER_AREA), without cv2.

    Rows first, then columns of those sums, accumulated in float32 term by term and
    rounded half to even, which is what OpenCV does for this non-integer scale.
    """
    x_index, x_weight = _area_table(frame.shape[1], FRAME_SHAPE[1])
    y_index, y_weight = _area_table(frame.shape[0], FRAME_SHAPE[0])
    pixels = frame.astype(np.float32)
    rows = np.zeros((frame.shape[0], FRAME_SHAPE[1]), dtype=np.float32)
    for index, weight in zip(x_index, x_weight, strict=True):
        rows = rows + pixels[:, index] * weight
    out = np.zeros(FRAME_SHAPE, dtype=np.float32)
    for index, weight in zip(y_index, y_weight, strict=True):
        out = out + weight[:, None] * rows[index]
    return np.rint(out).astype(np.uint8)


class ScreenEmulator:
    """`AtariVectorEnv` with one env, in Python, calling `on_frame` with every RGB screen.

    Built from the same `EnvConfig` as the vector env it stands in for, and given to
    `AtariPipeline(config, emulator=...)`. Its no-op counts come from its own generator, so
    with no-ops its games differ from the C++ env's under the same seed.
    """

    def __init__(self, config: EnvConfig, on_frame: FrameSink | None = None):
        import ale_py
        from ale_py import roms

        if config.num_envs != 1:
            raise ValueError("ScreenEmulator plays one game: num_envs must be 1")
        ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
        self.config = config
        self.on_frame = on_frame
        self.ale = ale_py.ALEInterface()
        self.ale.setFloat("repeat_action_probability", config.sticky_action_prob)
        self._rom = roms.get_rom_path(game_id(config.game))
        self._seed(config.seed)
        self._actions = self.ale.getMinimalActionSet()
        self.action_names = [a.name for a in self._actions]
        self._fire_at_reset = config.fire_after_life_loss and "FIRE" in self.action_names
        self._stack = np.zeros((config.frame_stack, *FRAME_SHAPE), dtype=np.uint8)
        self._raw = np.zeros((2, *SCREEN_SHAPE), dtype=np.uint8)  # last two frames of a step
        self._elapsed = 0  # frames since the reset's no-ops, for the frame cap
        self._lives = 0
        self._needs_reset = False  # the last step ended the game: the next one resets it

    @property
    def lives(self) -> int:
        return self.ale.lives()

    @property
    def frames(self) -> int:
        """Emulator frames since the game was reset, FIRE and no-ops included."""
        return self.ale.getEpisodeFrameNumber()

    def reset(self, seed: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is not None:
            self._seed(int(np.asarray(seed).reshape(-1)[0]))
        self._reset_game()
        return self._stack[None].copy(), self._info()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                  np.ndarray, dict[str, Any]]:
        """One agent step of FRAMESKIP frames, or the reset of a game that ended."""
        reward = 0.0
        terminated = truncated = False
        if self._needs_reset:
            self._reset_game()
        else:
            action = self._actions[int(np.asarray(actions).reshape(-1)[0])]
            game_over = life_lost = False
            for skip in range(FRAMESKIP, 0, -1):
                reward += self._act(action)
                game_over = self.ale.game_over()
                self._elapsed += 1
                life_lost = 0 < self.ale.lives() < self._lives
                if game_over or self._elapsed >= self.config.max_frames_per_game:
                    break
                if skip <= 2:
                    self._raw[skip - 1] = self.ale.getScreenGrayscale()
            self._push(self._frame())
            self._lives = self.ale.lives()
            truncated = not game_over and self._elapsed >= self.config.max_frames_per_game
            terminated = game_over or (self.config.life_loss_ends_episode and life_lost)
            self._needs_reset = game_over or truncated
        return (self._stack[None].copy(), np.array([reward], dtype=np.float32),
                np.array([terminated]), np.array([truncated]), self._info())

    def close(self) -> None:
        pass

    def _seed(self, seed: int) -> None:
        self.ale.setInt("random_seed", seed)
        self.ale.loadROM(self._rom)  # ALE reads its seed when a ROM is loaded
        self._rng = np.random.default_rng(seed)

    def _reset_game(self) -> None:
        """A new game: FIRE, then up to noop_max no-op frames; the stack starts with zeros."""
        self.ale.reset_game()
        if self._fire_at_reset:
            self._act(self._actions[self.action_names.index("FIRE")])
        noop_max = self.config.noop_max
        noops = int(self._rng.integers(0, noop_max)) if noop_max > 0 else 0
        for _ in range(noops - self._fire_at_reset):
            self._act(self._actions[0])
            if self.ale.game_over():
                self.ale.reset_game()
        self._raw[0] = self.ale.getScreenGrayscale()
        self._raw[1] = 0
        self._stack[:] = 0
        self._push(self._frame())
        self._elapsed = 0
        self._lives = self.ale.lives()
        self._needs_reset = False

    def _info(self) -> dict[str, Any]:
        return {"lives": np.array([self.ale.lives()]),
                "episode_frame_number": np.array([self.ale.getEpisodeFrameNumber()])}

    def _act(self, action: Any) -> float:
        reward = self.ale.act(action)
        if self.on_frame is not None:
            self.on_frame(self.ale.getScreenRGB())
        return float(reward)

    def _frame(self) -> np.ndarray:
        np.maximum(self._raw[0], self._raw[1], out=self._raw[0])
        return resize_area(self._raw[0])

    def _push(self, frame: np.ndarray) -> None:
        self._stack[:-1] = self._stack[1:]
        self._stack[-1] = frame
