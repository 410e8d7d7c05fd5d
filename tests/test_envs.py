"""The Atari pipeline, checked on the real Breakout ROM that ships inside ale-py.

Each property is checked on recorded play rather than on hand-made fixtures, because the
conventions being tested (life loss vs game over, forced FIRE, reset steps) only show up
in what the emulator really does. Recordings are module-scoped so the file stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np
import pytest

from atari_rl.envs import FIRE, AtariPipeline, EnvConfig, Step, game_id

BREAKOUT_LIVES = 5
NOOP, RIGHT, LEFT = 0, 2, 3
NOT_FIRE = np.array([NOOP, RIGHT, LEFT])

Policy = Callable[[np.ndarray], np.ndarray]


@dataclass
class Recording:
    """What the pipeline returned, next to what really reached ale-py's vector env.

    The emulator side is the ground truth: it tells us the actions the emulator was
    given and the lives and frame counters it reported, independent of the pipeline's
    own bookkeeping.
    """

    start: np.ndarray  # the stacks returned by reset()
    start_lives: np.ndarray
    start_frame_numbers: np.ndarray
    agent_actions: list[np.ndarray] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    emulator_actions: list[np.ndarray] = field(default_factory=list)
    lives: list[np.ndarray] = field(default_factory=list)
    frame_numbers: list[np.ndarray] = field(default_factory=list)

    def stacked(self, name: str) -> np.ndarray:
        """One Step field over time, [T, num_envs, ...]."""
        return np.stack([getattr(step, name) for step in self.steps])

    def obs_with_start(self) -> np.ndarray:
        """Stacks [T + 1, num_envs, 4, 84, 84]: reset()'s, then each step's."""
        return np.concatenate([self.start[None], self.stacked("obs")])


def play(config: EnvConfig, policy: Policy, num_steps: int) -> Recording:
    """Run the pipeline with `policy`, spying on the calls it makes to ale-py."""
    pipeline = AtariPipeline(config)
    emulator = pipeline._env  # spied on, not altered: the calls pass straight through
    real_reset, real_step = emulator.reset, emulator.step
    seen: dict[str, Any] = {}

    def reset(**kwargs: Any) -> Any:
        frames, info = real_reset(**kwargs)
        seen["info"] = info
        return frames, info

    def step(actions: np.ndarray) -> Any:
        out = real_step(actions)
        seen["actions"], seen["info"] = np.array(actions), out[-1]
        return out

    emulator.reset, emulator.step = reset, step
    try:
        obs = pipeline.reset()
        record = Recording(obs, np.array(seen["info"]["lives"]),
                           np.array(seen["info"]["episode_frame_number"]))
        for _ in range(num_steps):
            actions = policy(obs)
            step_out = pipeline.step(actions)
            obs = step_out.obs
            record.agent_actions.append(np.array(actions))
            record.steps.append(step_out)
            record.emulator_actions.append(seen["actions"])
            record.lives.append(np.array(seen["info"]["lives"]))
            record.frame_numbers.append(np.array(seen["info"]["episode_frame_number"]))
    finally:
        pipeline.close()
    return record


def random_policy(seed: int, choices: np.ndarray) -> Policy:
    rng = np.random.default_rng(seed)
    return lambda obs: rng.choice(choices, size=len(obs))


PLAY_LO, PLAY_HI = 5, 79  # columns inside Breakout's side walls, on the 84x84 frame
BALL_ROWS = slice(38, 74)  # below the bricks, above the paddle
PADDLE_ROW = 76


def _ball(frame: np.ndarray) -> np.ndarray | None:
    pixels = np.argwhere(frame[BALL_ROWS, PLAY_LO:PLAY_HI] > 0)
    return None if len(pixels) == 0 else pixels.mean(axis=0) + (BALL_ROWS.start, PLAY_LO)


def _paddle(frame: np.ndarray) -> float | None:
    pixels = np.flatnonzero(frame[PADDLE_ROW, PLAY_LO:PLAY_HI] > 0)
    return None if len(pixels) == 0 else float(pixels.mean() + PLAY_LO)


def tracking_policy(stacks: np.ndarray) -> np.ndarray:
    """Moves the paddle to where the falling ball will land.

    Random play almost never breaks into the 4- and 7-point brick rows; this simple
    player does within about a thousand steps, so reward clipping is seen on real values.
    """
    actions = np.full(len(stacks), FIRE)
    for i, stack in enumerate(stacks):
        ball, ball_before = _ball(stack[-1]), _ball(stack[-2])
        paddle, paddle_before = _paddle(stack[-1]), _paddle(stack[-2])
        if ball is None or paddle is None:
            continue
        target = ball[1]
        if ball_before is not None and ball[0] > ball_before[0]:  # falling: extrapolate
            dy, dx = ball - ball_before
            width = PLAY_HI - PLAY_LO
            x = (ball[1] + dx * (PADDLE_ROW - 1 - ball[0]) / dy - PLAY_LO) % (2 * width)
            target = PLAY_LO + (x if x < width else 2 * width - x)  # bounce off the walls
        if paddle_before is not None:  # the paddle keeps sliding: aim from where it will be
            paddle += paddle - paddle_before
        actions[i] = RIGHT if target > paddle + 4 else LEFT if target < paddle - 4 else NOOP
    return actions


@pytest.fixture(scope="module")
def random_play() -> Recording:
    """Random play by an agent that never presses FIRE: any FIRE was the pipeline's."""
    config = EnvConfig(num_envs=2, num_threads=1, seed=0)
    return play(config, random_policy(0, NOT_FIRE), num_steps=1200)


@pytest.fixture(scope="module")
def tracking_play() -> Recording:
    """Long games with real scores, including the 4- and 7-point rows."""
    config = EnvConfig(num_envs=4, num_threads=2, seed=0)
    return play(config, tracking_policy, num_steps=2500)


def _game_over_rows(record: Recording) -> np.ndarray:
    """[T, num_envs] bool: Step.games reported a finished game for that env in that row."""
    rows = np.zeros((len(record.steps), len(record.start)), dtype=bool)
    for t, step in enumerate(record.steps):
        for game in step.games:
            rows[t, game.env_id] = True
    return rows


def test_life_loss_ends_the_training_episode_but_not_the_game(random_play: Recording) -> None:
    lives = np.stack(random_play.lives)
    frame_numbers = np.stack(random_play.frame_numbers)
    terminated = random_play.stacked("terminated")
    game_over = _game_over_rows(random_play)
    assert (random_play.start_lives == BREAKOUT_LIVES).all()

    for env in range(len(random_play.start)):
        prev_lives, prev_frame = BREAKOUT_LIVES, random_play.start_frame_numbers[env]
        lives_at_terminals: list[int] = []
        games = 0
        for t in range(len(random_play.steps)):
            assert game_over[t, env] == (prev_lives == 0), f"env {env} step {t}"
            if game_over[t, env]:  # the game restarted, right after its last life
                assert lives_at_terminals == [4, 3, 2, 1, 0]
                assert lives[t, env] == BREAKOUT_LIVES
                assert frame_numbers[t, env] < prev_frame
                lives_at_terminals, games = [], games + 1
            else:  # same game: its frame counter keeps running through life losses
                assert frame_numbers[t, env] > prev_frame
                expected = prev_lives - 1 if terminated[t, env] else prev_lives
                assert lives[t, env] == expected, f"env {env} step {t}"
            if terminated[t, env]:
                lives_at_terminals.append(int(lives[t, env]))
            prev_lives, prev_frame = lives[t, env], frame_numbers[t, env]
        assert games >= 2, "play longer: fewer than two whole games were seen"


def test_fire_is_forced_after_each_life_loss_and_game_reset(random_play: Recording) -> None:
    agent = np.stack(random_play.agent_actions)
    executed = random_play.stacked("actions")
    sent = np.stack(random_play.emulator_actions)
    first = random_play.stacked("first")
    game_over = _game_over_rows(random_play)
    assert not (agent == FIRE).any()

    # FIRE exactly on the rows right after a terminal, the agent's action everywhere else.
    assert np.array_equal(executed, np.where(first, FIRE, agent))
    assert np.array_equal(sent, executed)
    assert (first & ~game_over).any() and game_over.any()  # both kinds of reset were seen

    # The agent never fires, yet lives are lost in every game: the ball was relaunched
    # after the game reset (ale-py's fire reset) and after every life loss (ours).
    terminated = random_play.stacked("terminated")
    for env in range(len(random_play.start)):
        game_starts = [0, *(np.flatnonzero(game_over[:, env]))]
        for begin, end in pairwise(game_starts):
            assert terminated[begin:end, env].sum() == BREAKOUT_LIVES


def test_fire_is_not_forced_when_switched_off() -> None:
    config = EnvConfig(num_envs=2, num_threads=1, seed=0, fire_after_life_loss=False)
    record = play(config, random_policy(1, np.arange(4)), num_steps=500)
    assert np.array_equal(record.stacked("actions"), np.stack(record.agent_actions))
    assert np.array_equal(np.stack(record.emulator_actions), np.stack(record.agent_actions))
    assert record.stacked("terminated").any()  # life losses happened, FIRE still unforced

    # Without FIRE from anyone the ball is never launched: no point, no life lost.
    record = play(config, random_policy(2, NOT_FIRE), num_steps=300)
    assert not record.stacked("raw_reward").any()
    assert not record.stacked("terminated").any()
    assert (np.stack(record.lives) == BREAKOUT_LIVES).all()


def _is_repeated_frame(stack: np.ndarray) -> bool:
    return bool((stack == stack[-1]).all() and stack[-1].any())


def _is_zero_padded(stack: np.ndarray) -> bool:
    return bool(not stack[:-1].any() and stack[-1].any())


def test_new_episode_stacks_repeat_the_first_frame(random_play: Recording) -> None:
    assert all(_is_repeated_frame(stack) for stack in random_play.start)
    obs, first = random_play.stacked("obs"), random_play.stacked("first")
    assert first.sum() >= 10
    assert all(_is_repeated_frame(stack) for stack in obs[first])


def test_new_episode_stacks_are_zero_padded_when_asked() -> None:
    config = EnvConfig(num_envs=2, num_threads=1, seed=0, repeat_first_frame=False)
    record = play(config, random_policy(3, NOT_FIRE), num_steps=300)
    assert all(_is_zero_padded(stack) for stack in record.start)
    obs, first = record.stacked("obs"), record.stacked("first")
    assert first.any()
    assert all(_is_zero_padded(stack) for stack in obs[first])
    # The next stacks shift in new frames behind the zeros: none of the previous life's
    # frames, which ale-py's own stack carries over a life loss, comes back.
    for t, env in zip(*np.nonzero(first[:-2]), strict=True):
        for age in (1, 2):
            stack = obs[t + age, env]
            assert not first[t + age, env]
            assert not stack[:3 - age].any(), f"step {t + age} env {env}"
            assert np.array_equal(stack[3 - age:-1], obs[t + age - 1, env][4 - age:])


def test_no_transition_crosses_an_episode_boundary(random_play: Recording) -> None:
    obs = random_play.obs_with_start()
    first = random_play.stacked("first")
    done = random_play.stacked("terminated") | random_play.stacked("truncated")
    reward = random_play.stacked("reward")

    # Reset rows are exactly the rows after a terminal or truncated one.
    assert not first[0].any()
    assert np.array_equal(first[1:], done[:-1])
    assert not reward[first].any()

    for t in range(1, len(obs)):
        for env in range(obs.shape[1]):
            new, old = obs[t, env], obs[t - 1, env]
            if first[t - 1, env]:
                assert _is_repeated_frame(new), f"step {t - 1} env {env}"
            else:
                assert np.array_equal(new[:-1], old[1:]), f"step {t - 1} env {env}"


def test_episode_lengths_count_only_real_transitions(random_play: Recording) -> None:
    first = random_play.stacked("first")
    lengths = np.zeros(len(random_play.start), dtype=int)
    reported = 0
    for t, step in enumerate(random_play.steps):
        lengths += ~first[t]
        for episode in step.episodes:
            assert step.terminated[episode.env_id] or step.truncated[episode.env_id]
            assert episode.steps == lengths[episode.env_id]
            lengths[episode.env_id] = 0
            reported += 1
    assert reported == random_play.stacked("terminated").sum()


def test_game_scores_add_up(tracking_play: Recording) -> None:
    num_envs = len(tracking_play.start)
    game_raw = np.zeros(num_envs)  # raw rewards of every row of the game, reset rows too
    episode_sum = np.zeros(num_envs)  # per-life scores reported so far in this game
    games = []
    for step in tracking_play.steps:
        for game in step.games:  # reported on the reset row, before its own reward
            assert game.score == pytest.approx(game_raw[game.env_id])
            assert game.score == pytest.approx(episode_sum[game.env_id])
            game_raw[game.env_id] = episode_sum[game.env_id] = 0.0
            games.append(game)
        game_raw += step.raw_reward
        for episode in step.episodes:
            episode_sum[episode.env_id] += episode.score
    assert len(games) >= num_envs
    assert len({game.score for game in games}) > 1  # real, varied scores were checked
    assert min(game.score for game in games) > 0


def test_rewards_are_clipped_but_raw_scores_kept(tracking_play: Recording) -> None:
    raw = tracking_play.stacked("raw_reward")
    reward = tracking_play.stacked("reward")
    first = tracking_play.stacked("first")
    assert {1.0, 4.0, 7.0} <= set(np.unique(raw).tolist())  # Breakout's three brick values
    assert np.array_equal(reward[~first], np.sign(raw[~first]))
    assert set(np.unique(reward).tolist()) <= {0.0, 1.0}


def test_raw_rewards_are_learned_when_clipping_is_off() -> None:
    config = EnvConfig(num_envs=4, num_threads=2, seed=0, clip_rewards=False)
    record = play(config, tracking_policy, num_steps=500)
    raw, reward = record.stacked("raw_reward"), record.stacked("reward")
    first = record.stacked("first")
    assert (raw > 1).any()
    assert np.array_equal(reward[~first], raw[~first])


def _observations(seed: int, actions: np.ndarray) -> np.ndarray:
    config = EnvConfig(num_envs=actions.shape[1], num_threads=2, seed=seed)
    steps = iter(actions)
    return play(config, lambda obs: next(steps), len(actions)).obs_with_start()


def test_equal_seeds_replay_and_different_seeds_differ() -> None:
    actions = np.random.default_rng(4).integers(0, 4, size=(300, 2))
    first, again = _observations(7, actions), _observations(7, actions)
    assert np.array_equal(first, again)
    other = _observations(9, actions)  # env seeds 9, 10: disjoint from 7, 8
    assert (first != other).any(axis=(0, 2, 3, 4)).all()  # every env plays differently


@pytest.mark.parametrize(
    ("name", "expected"),
    [("Breakout", "breakout"), ("breakout", "breakout"), ("MsPacman", "ms_pacman"),
     ("ms_pacman", "ms_pacman"), ("SpaceInvaders", "space_invaders"), (" Pong ", "pong")],
)
def test_game_id_maps_names_to_rom_ids(name: str, expected: str) -> None:
    assert game_id(name) == expected


@pytest.mark.parametrize("name", ["Brekout", "BreakoutNoFrameskip-v4", ""])
def test_game_id_rejects_unknown_games_helpfully(name: str) -> None:
    with pytest.raises(ValueError, match=r"unknown game .*breakout, pong or ms_pacman"):
        game_id(name)
