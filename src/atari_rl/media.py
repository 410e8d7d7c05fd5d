"""Videos of a policy playing whole games, with what the agent thinks drawn beside the screen.

The MP4 holds every emulator frame at the Atari's own 60 fps, the 210x160 RGB screen scaled
up by a whole factor (nearest neighbour, so pixels stay sharp). Beside it: the score, lives,
and the policy's action probabilities (A2C) or Q-values (DQN) as bars labelled with the
action names, redrawn at each agent step (every 4 frames), so that a policy collapsing onto
one action is visible. The optional GIF keeps one frame per agent step, at 15 fps, because
GIF delays are counted in hundredths of a second and 60 fps cannot be written.

The vector env that training uses gives no RGB frames, so the games are played by
`envs.AtariPipeline` (the one implementation of the learning conventions) on
`screen.ScreenEmulator`, which steps one game frame by frame and hands each RGB screen to
the video, under the evaluation protocol (whole games, FIRE after each life loss, no-op
starts): the agent sees what evaluation shows it.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from atari_rl.algorithms import PROBABILITIES
from atari_rl.envs import FIRE, FRAMESKIP, AtariPipeline
from atari_rl.evaluation import EvalProtocol
from atari_rl.networks import one_thread
from atari_rl.screen import SCREEN_SHAPE, ScreenEmulator

SCREEN_FPS = 60  # one video frame per emulator frame
GIF_FPS = SCREEN_FPS // FRAMESKIP  # one GIF frame per agent step
PANEL_WIDTH = 150  # at scale 1
BACKGROUND = (17, 17, 17)
TEXT = (235, 235, 235)
MUTED = (150, 150, 150)
BAR = (70, 130, 180)
CHOSEN = (255, 140, 0)
TRACK = (40, 40, 40)

class Actor(Protocol):
    num_actions: int
    algo: str
    values_label: str
    action_names: tuple[str, ...]

    def act(self, obs: np.ndarray, greedy: bool = True) -> np.ndarray: ...

    def action_values(self, obs: np.ndarray) -> np.ndarray: ...


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
    config = protocol.env_config(game, num_envs=1)
    emulator = ScreenEmulator(config, on_frame=lambda screen: writer.write(canvas.frame(screen)))
    env = AtariPipeline(config, emulator=emulator)
    title = f"{game.replace('_', ' ').upper()} · {actor.algo.upper()}"
    try:
        with one_thread():
            played = [_play_game(actor, env, emulator, canvas, protocol, title, number)
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


def _play_game(actor: Actor, env: AtariPipeline, emulator: ScreenEmulator, canvas: Canvas,
               protocol: EvalProtocol, title: str, number: int) -> dict[str, Any]:
    """One whole game; its FIRE and no-op frames are played when it starts: by `reset` for
    the first game, by the pipeline's reset step (which carries no transition) after that."""
    canvas.draw_panel(PanelState(title, 0, emulator.lives, number, protocol.games, 0, None,
                                 None, note="no-op start"))
    obs = env.reset() if number == 1 else env.step(np.zeros(1, dtype=np.int64)).obs
    score, steps = 0.0, 0
    while True:
        action = int(actor.act(obs, greedy=protocol.greedy)[0])
        values = actor.action_values(obs)[0]
        forced = bool(env.fire_next[0])
        canvas.draw_panel(PanelState(title, score, emulator.lives, number, protocol.games,
                                     emulator.frames, values, FIRE if forced else action,
                                     note="FIRE after life loss" if forced else ""))
        step = env.step(np.array([action]))
        score += float(step.raw_reward[0])
        steps += 1
        obs = step.obs
        if step.done[0]:
            return {"score": score, "agent_steps": steps, "frames": emulator.frames,
                    "capped": bool(step.truncated[0])}
