"""Videos of a policy playing whole games, with what the agent thinks drawn beside the screen.

The MP4 holds every emulator frame at the Atari's own 60 fps, the 210x160 RGB screen scaled
up by a whole factor (nearest neighbour, so pixels stay sharp). Beside it: the score, lives,
and the policy's action probabilities (A2C) or Q-values (DQN) as bars labelled with the
action names, redrawn at each agent step (every 4 frames), so that a policy collapsing onto
one action is visible. The optional GIF keeps one frame per agent step, at 15 fps, because
GIF delays are counted in hundredths of a second and 60 fps cannot be written.

The vector env that training uses gives no RGB frames, so a single game is played here
directly on `ale_py.ALEInterface`, one emulator frame at a time, rebuilding the agent's
observation exactly as the C++ vector env does it (ALE's grayscale palette, the maximum of
the last two frames of each step, OpenCV's INTER_AREA resize to 84x84, with the same float32
arithmetic) and with the pipeline's conventions under the evaluation protocol: FIRE at game
start and after every life loss, up to `noop_max` no-op frames, first frame repeated in the
stack, whole games. tests/test_media.py checks the stacks against `AtariPipeline`'s.
"""

from __future__ import annotations

import math
import os
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from atari_rl.algorithms import PROBABILITIES
from atari_rl.envs import FIRE, FRAME_SHAPE, FRAMESKIP, game_id, needs_fire
from atari_rl.evaluation import MAX_FRAMES_PER_GAME, EvalProtocol
from atari_rl.policy import one_torch_thread

SCREEN_FPS = 60  # one video frame per emulator frame
GIF_FPS = SCREEN_FPS // FRAMESKIP  # one GIF frame per agent step
SCREEN_SHAPE = (210, 160)
PANEL_WIDTH = 150  # at scale 1
BACKGROUND = (17, 17, 17)
TEXT = (235, 235, 235)
MUTED = (150, 150, 150)
BAR = (70, 130, 180)
CHOSEN = (255, 140, 0)
TRACK = (40, 40, 40)

FrameSink = Callable[[np.ndarray], None]


class Actor(Protocol):
    num_actions: int
    algo: str
    values_label: str
    action_names: tuple[str, ...]

    def act(self, obs: np.ndarray, greedy: bool = True) -> np.ndarray: ...

    def action_values(self, obs: np.ndarray) -> np.ndarray: ...


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


@dataclass
class StepResult:
    obs: np.ndarray  # uint8 [frame_stack, 84, 84]
    reward: float  # raw
    done: bool  # game over or the frame cap
    truncated: bool  # the frame cap


class ScreenGame:
    """One Atari game played frame by frame, giving the agent AtariPipeline's observations.

    Mirrors ale-py's C++ vector env (src/ale/vector/preprocessed_env.cpp) with
    life_loss_ends_episode=False, plus the pipeline's FIRE after each life loss.
    `on_frame` receives the RGB screen after every emulator frame.
    """

    def __init__(self, game: str, *, seed: int = 0, noop_max: int = 30,
                 sticky_action_prob: float = 0.0, max_frames: int = MAX_FRAMES_PER_GAME,
                 frame_stack: int = 4, on_frame: FrameSink | None = None):
        import ale_py
        from ale_py import roms

        ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
        self.ale = ale_py.ALEInterface()
        self.ale.setInt("random_seed", seed)
        self.ale.setFloat("repeat_action_probability", sticky_action_prob)
        self.ale.loadROM(roms.get_rom_path(game_id(game)))
        self.actions = self.ale.getMinimalActionSet()
        self.action_names = [a.name for a in self.actions]
        self.noop_max = noop_max
        self.max_frames = max_frames
        self.on_frame = on_frame
        self._fire_at_reset = "FIRE" in self.action_names  # the vector env's rule
        self._fire_after_life_loss = needs_fire(self.action_names)  # the pipeline's rule
        self._rng = np.random.default_rng(seed)
        self._stack = np.zeros((frame_stack, *FRAME_SHAPE), dtype=np.uint8)
        self._raw = np.zeros((2, *SCREEN_SHAPE), dtype=np.uint8)  # last two frames of a step
        self._elapsed = 0
        self._lives = 0
        self.fire_next = False  # a life was lost: the next action is FIRE

    def reset(self) -> np.ndarray:
        """A new game: FIRE, then up to noop_max no-op frames; returns the first stack."""
        self.ale.reset_game()
        if self._fire_at_reset:
            self._act(self.actions[self.action_names.index("FIRE")])
        noops = int(self._rng.integers(0, self.noop_max)) if self.noop_max > 0 else 0
        for _ in range(noops - self._fire_at_reset):
            self._act(self.actions[0])
            if self.ale.game_over():
                self.ale.reset_game()
        self._raw[0] = self.ale.getScreenGrayscale()
        self._raw[1] = 0
        self._stack[:] = self._process()  # the first frame repeated, as the pipeline does
        self._elapsed = 0
        self._lives = self.ale.lives()
        self.fire_next = False
        return self._stack.copy()

    def step(self, action: int) -> StepResult:
        """One agent step of FRAMESKIP frames; FIRE replaces the action after a life loss."""
        if self.fire_next:
            action = FIRE
        reward = 0.0
        game_over = life_lost = False
        for skip in range(FRAMESKIP, 0, -1):
            reward += self._act(self.actions[action])
            game_over = self.ale.game_over()
            self._elapsed += 1
            lives = self.ale.lives()
            life_lost = 0 < lives < self._lives
            if game_over or self._elapsed >= self.max_frames:
                break
            if skip <= 2:
                self._raw[skip - 1] = self.ale.getScreenGrayscale()
        self._stack[:-1] = self._stack[1:]
        self._stack[-1] = self._process()
        self._lives = self.ale.lives()
        truncated = not game_over and self._elapsed >= self.max_frames
        done = game_over or truncated
        self.fire_next = life_lost and not done and self._fire_after_life_loss
        return StepResult(self._stack.copy(), reward, done, truncated)

    @property
    def lives(self) -> int:
        return self.ale.lives()

    @property
    def frames(self) -> int:
        """Emulator frames since the game was reset, FIRE and no-ops included."""
        return self.ale.getEpisodeFrameNumber()

    def _act(self, action: Any) -> float:
        reward = self.ale.act(action)
        if self.on_frame is not None:
            self.on_frame(self.ale.getScreenRGB())
        return float(reward)

    def _process(self) -> np.ndarray:
        np.maximum(self._raw[0], self._raw[1], out=self._raw[0])
        return resize_area(self._raw[0])


@dataclass
class PanelState:
    """What the side panel shows at one agent step."""

    title: str
    score: float
    lives: int
    game: int
    games: int
    frame: int
    values: np.ndarray | None  # per action, None before the agent acts
    chosen: int | None
    note: str = ""


class Canvas:
    """The screen scaled up, with the side panel drawn once per agent step."""

    def __init__(self, action_names: tuple[str, ...], values_label: str, scale: int):
        self.scale = scale
        self.action_names = action_names
        self.values_label = values_label
        self.screen_width = SCREEN_SHAPE[1] * scale
        self.size = (self.screen_width + PANEL_WIDTH * scale, SCREEN_SHAPE[0] * scale)
        self.image = np.zeros((self.size[1], self.size[0], 3), dtype=np.uint8)
        self._font = _font(9 * scale)
        self._big_font = _font(14 * scale)

    def frame(self, screen: np.ndarray) -> np.ndarray:
        """The canvas with this RGB screen in it."""
        scaled = screen.repeat(self.scale, axis=0).repeat(self.scale, axis=1)
        self.image[:, : self.screen_width] = scaled
        return self.image

    def draw_panel(self, state: PanelState) -> None:
        s = self.scale
        panel = Image.new("RGB", (PANEL_WIDTH * s, SCREEN_SHAPE[0] * s), BACKGROUND)
        draw = ImageDraw.Draw(panel)
        x = 6 * s
        draw.text((x, 5 * s), state.title, font=self._font, fill=MUTED)
        draw.text((x, 17 * s), f"score {state.score:g}", font=self._big_font, fill=TEXT)
        draw.text((x, 36 * s), f"lives {state.lives}   game {state.game}/{state.games}",
                  font=self._font, fill=TEXT)
        draw.text((x, 48 * s), f"frame {state.frame:,}", font=self._font, fill=MUTED)
        if state.note:  # above the bars: a video player's controls cover the bottom
            draw.text((x, 60 * s), state.note, font=self._font, fill=CHOSEN)
        draw.text((x, 74 * s), self.values_label, font=self._font, fill=TEXT)
        if state.values is not None:
            self._draw_bars(draw, state.values, state.chosen, top=88 * s)
        self.image[:, self.screen_width:] = np.asarray(panel)

    def _draw_bars(self, draw: ImageDraw.ImageDraw, values: np.ndarray, chosen: int | None,
                   top: int) -> None:
        """One bar per action; probabilities on a fixed 0..1 scale so a collapse shows."""
        s = self.scale
        bar_left = 46 * s
        bar_width = (PANEL_WIDTH - 46 - 36) * s
        if self.values_label == PROBABILITIES:
            low, high = 0.0, 1.0
        else:  # Q-values: a shared scale that includes zero
            low, high = min(0.0, float(values.min())), max(0.0, float(values.max()))
        span = (high - low) or 1.0
        zero = bar_left + (0.0 - low) / span * bar_width
        row = min(14 * s, (SCREEN_SHAPE[0] * s - top - 20 * s) // max(len(values), 1))
        for i, (name, value) in enumerate(zip(self.action_names, values, strict=True)):
            y = top + i * row
            colour = CHOSEN if i == chosen else BAR
            draw.text((6 * s, y), name[: 8], font=self._font,
                      fill=TEXT if i == chosen else MUTED)
            end = bar_left + (float(value) - low) / span * bar_width
            draw.rectangle([bar_left, y + 2 * s, bar_left + bar_width, y + row - 3 * s],
                           fill=TRACK)
            draw.rectangle([min(zero, end), y + 2 * s, max(zero, end), y + row - 3 * s],
                           fill=colour)
            draw.text((bar_left + bar_width + 3 * s, y), f"{value:.2f}", font=self._font,
                      fill=TEXT if i == chosen else MUTED)


@cache
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


@dataclass(frozen=True)
class RecordSettings:
    """How the recorded games are played (the evaluation protocol) and drawn.

    The games are played one after another on one emulator, whatever the protocol's num_envs.
    """

    protocol: EvalProtocol = EvalProtocol(games=1, num_envs=1)  # one game, unless asked
    scale: int = 2  # the screen's upscaling, 1 to 4

    def validate(self) -> None:
        """Raise ValueError with one line naming the bad value."""
        self.protocol.validate()
        if not 1 <= self.scale <= 4:
            raise ValueError("--scale must be 1, 2, 3 or 4")


class _Mp4Writer:
    """An ffmpeg process fed frame by frame, writing to a temporary name renamed at the end."""

    def __init__(self, path: Path, size: tuple[int, int], fps: int):
        import imageio_ffmpeg

        self.path = path
        self.temporary = path.with_name(f".{path.name}.tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = imageio_ffmpeg.write_frames(
            str(self.temporary), size, fps=fps, codec="libx264", pix_fmt_out="yuv420p",
            macro_block_size=1, quality=None, ffmpeg_log_level="error",
            output_params=["-crf", "20", "-preset", "fast", "-movflags", "+faststart",
                           "-f", "mp4"])
        self._writer.send(None)
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        self._writer.send(np.ascontiguousarray(frame))
        self.frames += 1

    def finish(self) -> None:
        self._writer.close()
        os.replace(self.temporary, self.path)

    def abandon(self) -> None:
        self._writer.close()
        self.temporary.unlink(missing_ok=True)


def mp4_to_gif(mp4: Path, gif: Path) -> None:
    """Every FRAMESKIP-th frame of the MP4 (one per agent step) into a GIF at GIF_FPS.

    Two ffmpeg passes over the file, a 64-colour palette then the GIF, so that nothing is
    held in memory however long the game (one pass would buffer every frame).
    """
    import imageio_ffmpeg

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    every = f"select='not(mod(n\\,{FRAMESKIP}))'"
    temporary = gif.with_name(f".{gif.name}.tmp")
    palette = gif.with_name(f".{gif.name}.palette.png")
    try:
        subprocess.run([ffmpeg, "-v", "error", "-y", "-i", str(mp4), "-vf",
                        f"{every},palettegen=max_colors=64:stats_mode=diff", str(palette)],
                       check=True, capture_output=True)
        subprocess.run([ffmpeg, "-v", "error", "-y", "-i", str(mp4), "-i", str(palette),
                        "-lavfi", f"{every},setpts=N/{GIF_FPS}/TB[x];"
                        "[x][1:v]paletteuse=dither=none:diff_mode=rectangle",
                        "-r", str(GIF_FPS), "-f", "gif", str(temporary)],
                       check=True, capture_output=True)
        os.replace(temporary, gif)
    finally:
        palette.unlink(missing_ok=True)
        temporary.unlink(missing_ok=True)


def record(actor: Actor, game: str, video_path: Path, settings: RecordSettings,
           gif_path: Path | None = None) -> dict[str, Any]:
    """Play the protocol's games whole into an MP4 (and a GIF); returns what was recorded."""
    settings.validate()
    protocol = settings.protocol
    canvas = Canvas(actor.action_names, actor.values_label, settings.scale)
    writer = _Mp4Writer(video_path, canvas.size, SCREEN_FPS)
    env = ScreenGame(game, seed=protocol.seed, noop_max=protocol.noop_max,
                     sticky_action_prob=protocol.sticky_action_prob,
                     max_frames=protocol.max_frames_per_game,
                     on_frame=lambda screen: writer.write(canvas.frame(screen)))
    title = f"{game.replace('_', ' ').upper()} · {actor.algo.upper()}"
    try:
        with one_torch_thread():
            played = [_play_game(actor, env, canvas, protocol, title, number)
                      for number in range(1, protocol.games + 1)]
        writer.finish()
    except BaseException:
        writer.abandon()
        raise
    if gif_path is not None:
        try:
            mp4_to_gif(video_path, gif_path)
        except BaseException:
            video_path.unlink(missing_ok=True)
            raise
    played_as = asdict(protocol)
    del played_as["num_envs"]  # one emulator, whatever the protocol says
    return {
        "video": video_path.name,
        "frames": writer.frames,
        "fps": SCREEN_FPS,
        "frame_rate": "one video frame per emulator frame (4 per agent step)",
        "gif": gif_path.name if gif_path else None,
        "gif_frames": -(-writer.frames // FRAMESKIP) if gif_path else None,
        "gif_fps": GIF_FPS if gif_path else None,
        "size": list(canvas.size),
        "scale": settings.scale,
        "game": game,
        "algo": actor.algo,
        "values": actor.values_label,
        "games": played,
        "settings": {**played_as, "scale": settings.scale,
                     "epsilon": 0.0 if protocol.greedy else protocol.epsilon},
    }


def _play_game(actor: Actor, env: ScreenGame, canvas: Canvas, protocol: EvalProtocol,
               title: str, number: int) -> dict[str, Any]:
    score, steps = 0.0, 0
    canvas.draw_panel(PanelState(title, 0, env.lives, number, protocol.games, 0, None, None,
                                 note="no-op start"))
    obs = env.reset()
    while True:
        batch = obs[None]
        action = int(actor.act(batch, greedy=protocol.greedy)[0])
        values = actor.action_values(batch)[0]
        forced = env.fire_next
        canvas.draw_panel(PanelState(title, score, env.lives, number, protocol.games,
                                     env.frames, values, FIRE if forced else action,
                                     note="FIRE after life loss" if forced else ""))
        result = env.step(action)
        score += result.reward
        steps += 1
        obs = result.obs
        if result.done:
            return {"score": score, "agent_steps": steps, "frames": env.frames,
                    "capped": result.truncated}
