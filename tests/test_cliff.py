"""The cliff detector on synthetic update streams: silent on health, loud on each sign."""

from __future__ import annotations

import json
import math
import random
from collections import deque

import pytest

from atari_rl.algorithms import algorithms
from atari_rl.cliff import CliffConfig, CliffDetector, CliffEvent, parse_reaction

ACTIONS = 4  # Breakout
A2C_SIGNALS = algorithms()["a2c"].cliff  # the statistics each algorithm declares
DQN_SIGNALS = algorithms()["dqn"].cliff


def a2c_stats(critic: float = 0.05, entropy: float = 1.0, grad_norm: float = 0.4,
              actor: float = -0.01, max_prob: float = 0.5) -> dict[str, float]:
    return {"actor_loss": actor, "critic_loss": critic, "entropy": entropy,
            "grad_norm": grad_norm, "max_action_prob": max_prob, "value_mean": 1.0,
            "explained_variance": math.nan, "learning_rate": 7e-4}


class Feeder:
    """Drives a detector the way the training loop will: step, scores and games."""

    def __init__(self, detector: CliffDetector, games: int = 0):
        self.detector = detector
        self.step = 0
        self.games = games
        self.events: list[CliffEvent] = []

    def __call__(self, stats: dict[str, float], mean20: float = math.nan,
                 mean100: float = math.nan, best: float = math.nan) -> CliffEvent | None:
        self.step += 80
        event = self.detector.check(self.step, stats, mean100, mean20, best, games=self.games)
        if event is not None:
            self.events.append(event)
        return event


def warmed(config: CliffConfig | None = None, updates: int = 300, seed: int = 0) -> Feeder:
    """A detector that has seen `updates` healthy, noisy updates (critic loss ~0.05)."""
    rng = random.Random(seed)
    feed = Feeder(CliffDetector(config or CliffConfig(), ACTIONS, A2C_SIGNALS))
    for _ in range(updates):
        assert feed(a2c_stats(critic=0.05 * rng.lognormvariate(0, 0.7))) is None
    return feed


def test_a_healthy_a2c_run_never_fires():
    # 20,000 updates: spiky critic losses on a rising level, entropy from uniform down to a
    # nearly deterministic good agent, scores from random play to ~300 with game noise.
    rng = random.Random(1)
    feed = Feeder(CliffDetector(CliffConfig(), ACTIONS, A2C_SIGNALS))
    last20, last100 = deque(maxlen=20), deque(maxlen=100)
    best100 = math.nan
    updates = 20_000
    for i in range(updates):
        progress = i / updates
        level = 1.7 + 300 * min(progress * 1.5, 1.0)
        if rng.random() < 0.1:  # a game ends
            last20.append(max(0.0, rng.gauss(level, 0.5 * level)))
            last100.append(last20[-1])
            feed.games += 1
            if len(last100) == 100:
                mean = sum(last100) / 100
                best100 = mean if math.isnan(best100) else max(best100, mean)
        critic = (0.02 + 0.3 * progress) * rng.lognormvariate(0, 0.8)
        if rng.random() < 0.01:
            critic *= 20  # a surprise: a rare big return
        entropy = max(0.03, 1.386 * (1 - progress * 1.2)) * rng.uniform(0.8, 1.2)
        mean20 = sum(last20) / len(last20) if last20 else math.nan
        mean100 = sum(last100) / len(last100) if last100 else math.nan
        feed(a2c_stats(critic=critic, entropy=entropy, grad_norm=rng.uniform(0.2, 5)),
             mean20, mean100, best100)
    assert feed.games > 1_500 and best100 > 250
    assert feed.events == []


def test_a_dqn_run_with_nan_placeholders_before_learning_never_fires():
    rng = random.Random(2)
    feed = Feeder(CliffDetector(CliffConfig(), ACTIONS, DQN_SIGNALS))
    placeholder = {"td_loss": math.nan, "q_mean": math.nan, "target_mean": math.nan,
                   "grad_norm": math.nan, "epsilon": 1.0, "replay_size": 100.0}
    for _ in range(500):  # the replay memory fills
        feed(placeholder)
    for _ in range(5_000):
        feed({"td_loss": 0.01 * rng.lognormvariate(0, 1), "q_mean": rng.uniform(0, 3),
              "target_mean": 1.0, "grad_norm": rng.uniform(0.5, 8), "epsilon": 0.01})
    assert feed.events == []


def test_a_nan_loss_fires_non_finite_with_the_key_and_value():
    feed = warmed(updates=5)  # no minimum number of updates for a NaN
    event = feed(a2c_stats(critic=math.nan))
    assert event == CliffEvent("non_finite", feed.step, event.detail)
    assert "critic_loss=nan" in event.detail


def test_an_infinite_grad_norm_fires_non_finite():
    feed = warmed(updates=5)
    event = feed(a2c_stats(grad_norm=math.inf))
    assert event is not None and event.kind == "non_finite"
    assert "grad_norm=inf" in event.detail and "critic_loss" not in event.detail


def test_inf_fires_even_on_the_first_update_but_nan_placeholders_do_not():
    assert Feeder(CliffDetector(CliffConfig(), ACTIONS, DQN_SIGNALS))({"td_loss": math.nan}) is None
    event = Feeder(CliffDetector(CliffConfig(), ACTIONS, DQN_SIGNALS))({"td_loss": math.inf})
    assert event is not None and event.kind == "non_finite"


def test_a_nan_td_loss_after_learning_started_fires():
    feed = Feeder(CliffDetector(CliffConfig(), ACTIONS, DQN_SIGNALS))
    feed({"td_loss": 0.02, "q_mean": 1.0, "grad_norm": 1.0})
    event = feed({"td_loss": math.nan, "q_mean": math.nan, "grad_norm": math.nan})
    assert event is not None and event.kind == "non_finite"
    assert "td_loss=nan" in event.detail and "q_mean=nan" in event.detail


def test_critic_loss_jumping_1000x_fires_with_the_numbers():
    feed = warmed()
    jumped = a2c_stats(critic=1000 * 0.05 * 2.0)  # 1000x a loss above the median
    assert feed(jumped) is None and feed(jumped) is None  # patience: 3 in a row
    event = feed(jumped)
    assert event is not None and event.kind == "critic_explosion"
    assert event.detail.startswith("critic_loss 100 is ")
    assert "90th percentile" in event.detail and "last 300 updates" in event.detail
    assert "exceeded 3 updates in a row" in event.detail


def test_td_loss_explosion_fires_for_dqn():
    feed = Feeder(CliffDetector(CliffConfig(), ACTIONS, DQN_SIGNALS))
    for _ in range(300):
        feed({"td_loss": 0.01, "q_mean": 1.0, "grad_norm": 1.0})
    for _ in range(3):
        event = feed({"td_loss": 50.0, "q_mean": 1e4, "grad_norm": 10.0})
    assert event is not None and event.kind == "critic_explosion"
    assert event.detail.startswith("td_loss 50 is 5e+03x")


def test_isolated_critic_spikes_do_not_fire():
    feed = warmed()
    for spikes in (1, 2, 1, 2):  # a normal update after each breaks the streak
        for _ in range(spikes):
            assert feed(a2c_stats(critic=1e4)) is None
        assert feed(a2c_stats(critic=0.05)) is None


def test_an_explosion_never_becomes_the_recent_range():
    feed = warmed(CliffConfig(cooldown_updates=100))
    for _ in range(1_000):
        feed(a2c_stats(critic=1e4))
    # updates 301..1300 explode: fires on the 3rd (303), then once per 101 updates
    assert [e.step for e in feed.events] == [80 * (303 + 101 * k) for k in range(10)]
    assert max(feed.detector.state_dict()["window"]) < 1.0


def test_the_critic_limit_is_the_factor_times_the_upper_quantile():
    def one_to_thousand() -> Feeder:
        feed = Feeder(CliffDetector(CliffConfig(critic_patience=1), ACTIONS, A2C_SIGNALS))
        losses = [float(i) for i in range(1, 1001)]
        random.Random(3).shuffle(losses)
        for loss in losses:
            feed(a2c_stats(critic=loss))
        return feed

    # the 90th percentile of 1..1000 is 900.1 (linear interpolation): limit 90,010
    assert one_to_thousand()(a2c_stats(critic=90_000.0)) is None
    event = one_to_thousand()(a2c_stats(critic=90_020.0))
    assert event is not None and "limit 9.001e+04" in event.detail


def test_a_near_perfect_critic_does_not_fire_on_its_first_surprise():
    feed = Feeder(CliffDetector(CliffConfig(), ACTIONS, A2C_SIGNALS))
    for _ in range(300):
        feed(a2c_stats(critic=1e-6))
    for _ in range(3):
        assert feed(a2c_stats(critic=0.5)) is None  # below 100 x critic_min_scale = 1
    for _ in range(3):
        event = feed(a2c_stats(critic=5.0))
    assert event is not None and event.kind == "critic_explosion"


def test_no_critic_judgement_before_the_minimum_number_of_updates():
    feed = warmed(updates=150)  # min_updates is 200
    assert [feed(a2c_stats(critic=1e6)) for _ in range(3)] == [None] * 3
    feed = warmed(updates=200)
    assert [feed(a2c_stats(critic=1e6)) is None for _ in range(3)] == [True, True, False]


def test_entropy_collapse_while_the_score_falls_fires():
    feed = warmed()
    feed.games = 500
    event = feed(a2c_stats(entropy=0.01, max_prob=0.999), mean20=120.0, mean100=250.0,
                 best=300.0)
    assert event is not None and event.kind == "entropy_collapse"
    for number in ("entropy 0.01", "floor 0.06931", "ln 4", "max action prob 0.999",
                   "mean20 120.0", "40%", "best mean100 300.0", "falling below 150.0"):
        assert number in event.detail


def test_low_entropy_alone_or_a_mild_dip_alone_does_not_fire():
    feed = warmed()
    feed.games = 500
    assert feed(a2c_stats(entropy=0.01), mean20=290.0, mean100=300.0, best=300.0) is None
    assert feed(a2c_stats(entropy=0.5), mean20=120.0, mean100=250.0, best=300.0) is None


def test_score_falling_to_random_after_a_best_mean100_of_300_fires():
    feed = warmed()
    feed.games = 2_000
    event = feed(a2c_stats(), mean20=2.0, mean100=120.0, best=300.0)
    assert event is not None and event.kind == "score_collapse"
    for number in ("mean20 2.0", "1%", "best mean100 300.0", "limit 60.0", "2000 games"):
        assert number in event.detail


def test_normal_noise_of_a_good_agent_does_not_fire():
    feed = warmed()
    feed.games = 2_000
    assert feed(a2c_stats(), mean20=87.0, mean100=280.0, best=300.0) is None  # 29%: seen


def test_no_score_judgement_before_min_games_or_below_min_best_score():
    feed = warmed()
    feed.games = 99  # min_games is 100
    assert feed(a2c_stats(entropy=0.001), mean20=2.0, mean100=150.0, best=300.0) is None
    feed.games = 100
    assert feed(a2c_stats(), mean20=2.0, mean100=150.0, best=300.0) is not None
    feed = warmed()
    feed.games = 1_000  # early noise near random play: best mean100 below 20
    assert feed(a2c_stats(entropy=0.001), mean20=0.0, mean100=5.0, best=15.0) is None


def test_the_same_kind_waits_out_its_cooldown_but_another_kind_does_not():
    feed = warmed(CliffConfig(cooldown_updates=10))
    fired = [feed(a2c_stats(critic=math.nan)) is not None for _ in range(25)]
    assert fired == [True] + [False] * 10 + [True] + [False] * 10 + [True] + [False] * 2
    feed.games = 500
    event = feed(a2c_stats(critic=math.nan), mean20=2.0, mean100=100.0, best=300.0)
    assert event is not None and event.kind == "score_collapse"


def test_reset_forgets_the_window_and_the_cooldowns():
    feed = warmed()
    assert feed(a2c_stats(critic=math.nan)) is not None
    assert feed(a2c_stats(critic=math.nan)) is None
    feed.detector.reset()
    assert feed(a2c_stats(critic=math.inf)) is not None
    assert feed(a2c_stats(critic=1e6)) is None  # a fresh window: too few updates to judge


def test_state_round_trip_through_json_keeps_behaviour_identical():
    config = CliffConfig(cooldown_updates=50)
    feed = warmed(config, updates=400)
    feed(a2c_stats(critic=math.nan))  # non_finite fires: its cooldown is in the state
    feed(a2c_stats())
    feed(a2c_stats(critic=1e4))
    feed(a2c_stats(critic=1e4))  # a streak of 2 in progress is in the state too
    saved = len(feed.events)
    restored = CliffDetector(config, ACTIONS, A2C_SIGNALS)
    restored.load_state_dict(json.loads(json.dumps(feed.detector.state_dict())))
    twin = Feeder(restored)
    twin.step, twin.games = feed.step, feed.games
    fresh = Feeder(CliffDetector(config, ACTIONS, A2C_SIGNALS))
    fresh.step = feed.step

    rng = random.Random(4)
    stream = [a2c_stats(critic=0.05 * rng.lognormvariate(0, 0.7)) for _ in range(100)]
    stream[0] = a2c_stats(critic=1e4)  # completes the streak
    stream[1] = a2c_stats(critic=math.nan)  # inside the non_finite cooldown
    stream[55] = a2c_stats(critic=math.nan)  # after it
    for stats in stream:
        feed(stats)
        twin(stats)
        fresh(stats)
    after = feed.events[saved:]
    assert [(e.kind, e.step) for e in after] == [("critic_explosion", feed.step - 99 * 80),
                                                 ("non_finite", feed.step - 44 * 80)]
    assert twin.events == after
    assert twin.detector.state_dict() == feed.detector.state_dict()
    assert [e.kind for e in fresh.events] == ["non_finite", "non_finite"]  # state matters


def test_the_window_keeps_only_the_newest_losses():
    feed = Feeder(CliffDetector(CliffConfig(critic_window=300), ACTIONS, A2C_SIGNALS))
    for _ in range(300):
        feed(a2c_stats(critic=1000.0))
    for _ in range(300):
        feed(a2c_stats(critic=0.05))  # pushes every 1000 out
    assert max(feed.detector.state_dict()["window"]) == 0.05
    assert [feed(a2c_stats(critic=50.0)) is None for _ in range(3)] == [True, True, False]


@pytest.mark.parametrize("reaction", ["warn", "rollback", "stop"])
def test_parse_reaction_accepts_the_three_reactions(reaction):
    assert parse_reaction(reaction) == reaction


def test_parse_reaction_names_the_option_and_the_choices():
    with pytest.raises(ValueError, match=r"^--on-cliff must be one of warn, rollback, stop, "
                                         r"not 'roll-back'$"):
        parse_reaction("roll-back")


@pytest.mark.parametrize("change", [{"critic_factor": 1.0}, {"min_updates": 0},
                                    {"min_updates": 2_000}, {"score_drop": 1.0},
                                    {"critic_quantile": 1.5}])
def test_nonsense_thresholds_are_refused(change):
    with pytest.raises(ValueError, match="^CliffConfig: "):
        CliffConfig(**change)
