"""`atari-rl record`: the single-game player sees what the training pipeline shows the agent,
and the video holds one frame per emulator frame, with the agent's values drawn beside."""

from __future__ import annotations

import json

import imageio.v2 as imageio
import numpy as np
import pytest

from atari_rl.cli import main
from atari_rl.envs import AtariPipeline, EnvConfig
from atari_rl.media import Canvas, PanelState, ScreenGame, resize_area
from atari_rl.run_files import FINAL_POLICY, GIF_FILE, VIDEO_FILE, VIDEO_INFO_FILE

NAMES = ("NOOP", "FIRE", "RIGHT", "LEFT")


def test_resize_area_is_opencvs_inter_area_bit_for_bit():
    cv2 = pytest.importorskip("cv2", reason="opencv is only in the bench extra")
    rng = np.random.default_rng(0)
    for _ in range(20):
        frame = rng.integers(0, 256, (210, 160), dtype=np.uint8)
        expected = cv2.resize(frame, (84, 84), interpolation=cv2.INTER_AREA)
        assert np.array_equal(resize_area(frame), expected)


@pytest.mark.parametrize("max_frames", [108_000, 402])
def test_screen_game_gives_the_agent_the_pipelines_observations(max_frames):
    """A whole game of random actions (life losses, forced FIRE, game over or frame cap):
    every stack, reward and end equal to AtariPipeline's under the evaluation protocol."""
    pipeline = AtariPipeline(EnvConfig(num_envs=1, noop_max=0, life_loss_ends_episode=False,
                                       max_frames_per_game=max_frames))
    game = ScreenGame("breakout", noop_max=0, max_frames=max_frames)
    try:
        assert np.array_equal(pipeline.reset()[0], game.reset())
        rng = np.random.default_rng(0)
        forced_fires = 0
        for _ in range(max_frames):
            action = int(rng.integers(4))
            step = pipeline.step(np.array([action]))
            result = game.step(action)
            forced_fires += game.fire_next
            assert np.array_equal(step.obs[0], result.obs)
            assert step.raw_reward[0] == result.reward
            assert (bool(step.done[0]), bool(step.truncated[0])) == (result.done,
                                                                     result.truncated)
            if result.done:
                break
        assert result.done and forced_fires >= 1
        assert result.truncated == (max_frames == 402)
    finally:
        pipeline.close()


def test_record_writes_one_video_frame_per_emulator_frame(run_copy, capsys):
    run = run_copy()
    assert main(["record", str(run), "--max-frames", "240", "--gif"]) == 0
    info = json.loads((run / VIDEO_INFO_FILE).read_text())
    game = info["games"][0]
    assert game["capped"] and info["fps"] == 60
    assert info["frames"] == game["frames"]  # ALE's own count: FIRE, no-ops and 240 frames
    assert 241 <= info["frames"] <= 241 + 29
    reader = imageio.get_reader(run / VIDEO_FILE)
    try:
        assert reader.count_frames() == info["frames"]
        assert reader.get_meta_data()["fps"] == 60
        first = reader.get_data(0)
    finally:
        reader.close()
    assert first.shape == (420, 620, 3)  # 210x160 screen x2, and the panel beside it
    assert len(imageio.mimread(run / GIF_FILE)) == info["gif_frames"] == -(-info["frames"] // 4)
    assert "60 fps" in capsys.readouterr().out


def test_record_of_a_dqn_run_shows_q_values(run_copy, tiny_dqn_run):
    run = run_copy(tiny_dqn_run, "dqn")
    out = run / "videos" / "greedy.mp4"
    assert main(["record", str(run), "--greedy", "--scale", "1", "--max-frames", "40",
                 "--out", str(out)]) == 0
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["values"] == "Q-values" and info["size"] == [310, 210]
    assert info["settings"]["epsilon"] == 0.0


def test_panel_draws_one_bar_per_action_and_marks_the_chosen_one():
    canvas = Canvas(NAMES, "Q-values", scale=1)
    canvas.draw_panel(PanelState("BREAKOUT · DQN", 3, 5, 1, 1, 100,
                                 np.array([-1.0, 0.5, 2.0, -0.2]), chosen=2))
    panel = canvas.image[:, canvas.screen_width:]
    orange = np.all(panel == (255, 140, 0), axis=-1)
    rows = np.flatnonzero(orange.any(axis=1))
    assert rows.size and np.ptp(rows) < 14  # one orange bar: the chosen action's
    assert (panel != panel[0, 0]).any(axis=-1).sum() > 500  # text and bars drawn


@pytest.mark.parametrize(("setup", "extra", "complaint"), [
    ("missing", [], "does not exist"),
    ("not_a_run", [], "is not a run directory"),
    ("no_policy", [], "has no policy.safetensors yet"),
    ("run", ["--out", "video.avi"], "--out must name an .mp4 file"),
    ("run", ["--scale", "9"], "--scale must be 1, 2, 3 or 4"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, run_copy, capsys, setup,
                                                        extra, complaint):
    target = tmp_path / "missing"
    if setup == "not_a_run":
        target = tmp_path / "notes"
        target.mkdir()
    elif setup in ("no_policy", "run"):
        target = run_copy()
        if setup == "no_policy":
            (target / FINAL_POLICY).unlink()
    before = set(tmp_path.rglob("*"))
    assert main(["record", str(target), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert complaint in err and len(err.splitlines()) == 1
    assert set(tmp_path.rglob("*")) == before
