"""`atari-rl record`: the single-game player sees what the training pipeline shows the agent,
and the video holds one frame per emulator frame, with the agent's values drawn beside."""

from __future__ import annotations

import json

import imageio.v2 as imageio
import numpy as np
import pytest

from atari_rl.cli import main
from atari_rl.envs import FIRE, AtariPipeline, EnvConfig
from atari_rl.media import Canvas, PanelState
from atari_rl.run_files import FINAL_POLICY, GIF_FILE, VIDEO_FILE, VIDEO_INFO_FILE
from atari_rl.screen import ScreenEmulator, resize_area

NAMES = ("NOOP", "FIRE", "RIGHT", "LEFT")


def test_resize_area_is_opencvs_inter_area_bit_for_bit():
    cv2 = pytest.importorskip("cv2", reason="opencv is only in the bench extra")
    rng = np.random.default_rng(0)
    for _ in range(20):
        frame = rng.integers(0, 256, (210, 160), dtype=np.uint8)
        expected = cv2.resize(frame, (84, 84), interpolation=cv2.INTER_AREA)
        assert np.array_equal(resize_area(frame), expected)


@pytest.mark.parametrize(("max_frames", "life_loss_ends_episode"),
                         [(108_000, False), (402, False), (108_000, True)])
def test_the_pipeline_over_the_screen_emulator_equals_it_over_ale_pys_vector_env(
        max_frames, life_loss_ends_episode):
    """Two whole games of random actions (life losses, forced FIRE, game over or frame cap,
    the autoreset between them): every step the pipeline returns, equal over both."""
    config = EnvConfig(num_envs=1, noop_max=0, life_loss_ends_episode=life_loss_ends_episode,
                       max_frames_per_game=max_frames)
    frames: list[np.ndarray] = []
    emulator = ScreenEmulator(config, on_frame=frames.append)
    vector, screen = AtariPipeline(config), AtariPipeline(config, emulator=emulator)
    try:
        assert screen.action_names == vector.action_names
        assert np.array_equal(vector.reset(), screen.reset())
        rng = np.random.default_rng(0)
        games, forced_fires, capped = [], 0, 0
        while len(games) < 2:
            actions = rng.integers(4, size=1)
            expected, step = vector.step(actions), screen.step(actions)
            for name in ("obs", "reward", "raw_reward", "terminated", "truncated", "first",
                         "actions"):
                assert np.array_equal(getattr(expected, name), getattr(step, name)), name
            assert step.episodes == expected.episodes and step.games == expected.games
            forced_fires += step.actions[0] == FIRE != actions[0]  # after a life loss
            games += step.games
            capped += bool(step.truncated[0])
        assert forced_fires >= 1
        assert capped == 2 * (max_frames == 402)
        assert frames[0].shape == (210, 160, 3)
        assert len(frames) >= sum(g.steps for g in games)
    finally:
        vector.close()


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
                 "--games", "2", "--out", str(out)]) == 0
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["values"] == "Q-values" and info["size"] == [310, 210]
    # the second game's FIRE and no-ops are played by the pipeline's reset step, on video
    assert [g["capped"] for g in info["games"]] == [True, True]
    assert info["frames"] == sum(g["frames"] for g in info["games"])
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
