"""Detect the "cliff": the collapse the write-up saw after days of training.

What it saw, in order: the action probabilities collapsed onto one action, the critic loss
exploded to ten digits, and the score fell back to random play. `CliffDetector.check` is
called after every update with that update's statistics and the rolling scores, and
returns a `CliffEvent` when one of these signs appears:

- non_finite: a NaN or infinite loss, gradient norm or value estimate;
- critic_explosion: the critic's (or TD) loss far above its recent range;
- entropy_collapse: the policy close to deterministic while the score falls;
- score_collapse: the recent score far below the best rolling mean.

The detector only judges; what to do about it (warn, roll back, stop) is the training
loop's choice (`parse_reaction`). It is pure: no torch, no files, its state is a few
plain numbers (`state_dict`) so a resumed run keeps its sense of the recent range.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from atari_rl.algorithms import CliffSignals

REACTIONS = ("warn", "rollback", "stop")
KINDS = ("non_finite", "critic_explosion", "entropy_collapse", "score_collapse")


@dataclass
class CliffConfig:
    """Thresholds of the detector, set so that a healthy run's noise never crosses them.

    Scores are raw game points (all lives); the score defaults suit Breakout, where random
    play scores about 1.7 a game. For a game with another scale, `min_best_score` is the
    one to change.
    """

    # critic_explosion: the loss against the `critic_quantile` of the last `critic_window`
    # finite losses. The upper quantile rather than the median because the loss of a
    # healthy critic is spiky (a surprise reward); 100x it is far outside anything noise
    # does, and the write-up's critic loss went from small to ten digits.
    critic_window: int = 1_000
    critic_quantile: float = 0.9
    critic_factor: float = 100.0
    # Losses below this count as this when setting the limit, so a critic that is almost
    # exact on a rewardless stretch (loss ~1e-6) does not fire on the next reward.
    critic_min_scale: float = 0.01
    # Fire only after this many updates in a row above the limit: a healthy critic's spike
    # is one batch with a surprise in it, while an explosion lasts (and grows).
    critic_patience: int = 3
    # No critic judgement until the window holds this many losses: the first updates of a
    # fresh network move fast and say nothing about its range.
    min_updates: int = 200

    # entropy_collapse: entropy below this fraction of ln(num_actions), the entropy of the
    # uniform policy. 5% is about one action taken 99% of the time (4 actions). Low
    # entropy alone is no fault (a good agent can be nearly deterministic), so it fires
    # only while mean20 is also below (1 - entropy_score_drop) of the best mean100: half,
    # an earlier warning than score_collapse and still ~4 standard deviations of a 20-game
    # mean (taking a game's score to vary by about half the mean).
    entropy_floor_fraction: float = 0.05
    entropy_score_drop: float = 0.5

    # score_collapse: mean20 below (1 - score_drop) of the best mean100. The first A2C run
    # on Breakout dipped three times to 29% of its best (20 short games after the games
    # restarted at a checkpoint, say) and recovered within 100,000 steps; 20% still catches
    # what the write-up saw (a fall to random play) within 20 games.
    score_drop: float = 0.8
    # Score rules judge only after this many games (the best mean100 is a mean of 100
    # games) and once the best mean100 reaches this many points (~10x random Breakout),
    # so early noise near random play never fires.
    min_games: int = 100
    min_best_score: float = 20.0

    # After an event, the same kind does not fire again for this many updates: a collapse
    # lasts, and one warning per update would drown the log.
    cooldown_updates: int = 1_000

    def __post_init__(self) -> None:
        checks = [
            (self.critic_window >= 1, "critic_window must be at least 1"),
            (0.0 <= self.critic_quantile <= 1.0, "critic_quantile must be in [0, 1]"),
            (self.critic_factor > 1.0, "critic_factor must be above 1"),
            (self.critic_min_scale >= 0.0, "critic_min_scale must be 0 or more"),
            (self.critic_patience >= 1, "critic_patience must be at least 1"),
            (1 <= self.min_updates <= self.critic_window,
             "min_updates must be in [1, critic_window]"),
            (0.0 <= self.entropy_floor_fraction < 1.0, "entropy_floor_fraction must be in [0, 1)"),
            (0.0 < self.entropy_score_drop < 1.0, "entropy_score_drop must be in (0, 1)"),
            (0.0 < self.score_drop < 1.0, "score_drop must be in (0, 1)"),
            (self.min_games >= 1, "min_games must be at least 1"),
            (self.cooldown_updates >= 0, "cooldown_updates must be 0 or more"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"CliffConfig: {message}")


@dataclass(frozen=True)
class CliffEvent:
    kind: str  # one of KINDS
    step: int  # the agent step of the update that showed it
    detail: str  # one human line: what was seen, with the numbers


class CliffDetector:
    """Watches every update for the signs of a collapse; see the module docstring."""

    def __init__(self, config: CliffConfig, num_actions: int, signals: CliffSignals):
        """signals: which statistics are the algorithm's loss, entropy and vital signs."""
        if num_actions < 1:
            raise ValueError(f"num_actions must be at least 1, not {num_actions}")
        self.config = config
        self.num_actions = num_actions
        self.signals = signals
        self.entropy_floor = config.entropy_floor_fraction * math.log(num_actions)
        self.reset()

    def reset(self) -> None:
        """Forget everything: after a rollback the recent range is the old network's."""
        self._window: deque[float] = deque(maxlen=self.config.critic_window)
        self._sorted: list[float] = []  # the window, sorted, for its quantile
        self._updates = 0
        self._critic_streak = 0  # updates in a row above the critic limit
        self._last_fired: dict[str, int] = {}  # kind -> update index
        # The DQN agent reports all-NaN statistics while its memory fills, before it
        # learns; a NaN counts only once the learner has produced a finite number.
        self._learning = False

    def check(self, step: int, stats: dict[str, float], score_mean100: float,
              score_mean20: float, best_mean100: float, *, games: int) -> CliffEvent | None:
        """Judge one update; the most severe sign not in its cooldown, or None.

        Severity order: non_finite, critic_explosion, score_collapse, entropy_collapse.
        `games` is the number of finished games so far (the score rules wait for
        `min_games`); the scores are NaN before the first game.
        """
        self._updates += 1
        config = self.config
        critic_key = self.signals.loss if self.signals.loss in stats else None
        critic = stats.get(critic_key, math.nan) if critic_key else math.nan

        if any(math.isfinite(stats.get(k, math.nan)) for k in self.signals.watched):
            self._learning = True
        candidates = [
            self._non_finite(stats),
            self._critic_explosion(critic_key, critic),
        ]
        scores_judged = (games >= config.min_games and math.isfinite(score_mean20)
                         and math.isfinite(best_mean100) and best_mean100 >= config.min_best_score)
        if scores_judged:
            candidates.append(self._score_collapse(score_mean20, score_mean100, best_mean100,
                                                   games))
            candidates.append(self._entropy_collapse(stats, score_mean20, best_mean100))

        if math.isfinite(critic) and self._critic_streak == 0:
            # a loss over the limit stays out, so a lasting explosion never becomes the
            # recent range it is judged against
            self._remember(critic)

        for kind, detail in (c for c in candidates if c is not None):
            last = self._last_fired.get(kind)
            if last is None or self._updates - last > config.cooldown_updates:
                self._last_fired[kind] = self._updates
                return CliffEvent(kind, step, detail)
        return None

    def _non_finite(self, stats: dict[str, float]) -> tuple[str, str] | None:
        # inf is never a placeholder; NaN is one until the learner has produced a number
        bad = {k: stats[k] for k in self.signals.watched
               if k in stats and not math.isfinite(stats[k])
               and (self._learning or math.isinf(stats[k]))}
        if not bad:
            return None
        seen = ", ".join(f"{k}={v}" for k, v in bad.items())
        return "non_finite", f"non-finite learner statistics: {seen}"

    def _critic_explosion(self, key: str | None, loss: float) -> tuple[str, str] | None:
        config = self.config
        if key is None or not math.isfinite(loss) or len(self._sorted) < config.min_updates:
            self._critic_streak = 0
            return None
        recent = self._quantile()
        limit = config.critic_factor * max(recent, config.critic_min_scale)
        self._critic_streak = self._critic_streak + 1 if loss > limit else 0
        if self._critic_streak < config.critic_patience:
            return None
        percent = round(100 * config.critic_quantile)
        return "critic_explosion", (
            f"{key} {loss:.4g} is {loss / max(recent, 1e-30):.3g}x the {percent}th percentile "
            f"{recent:.4g} of the last {len(self._sorted)} updates (limit {limit:.4g}, "
            f"exceeded {self._critic_streak} updates in a row)")

    def _entropy_collapse(self, stats: dict[str, float], mean20: float,
                          best: float) -> tuple[str, str] | None:
        entropy = stats.get(self.signals.entropy, math.nan) if self.signals.entropy else math.nan
        threshold = (1.0 - self.config.entropy_score_drop) * best
        if not (entropy < self.entropy_floor and mean20 < threshold):
            return None
        max_prob = stats.get("max_action_prob", math.nan)
        prob = f", max action prob {max_prob:.3f}" if math.isfinite(max_prob) else ""
        return "entropy_collapse", (
            f"entropy {entropy:.4g} below the floor {self.entropy_floor:.4g} "
            f"({self.config.entropy_floor_fraction:.0%} of ln {self.num_actions}){prob}, "
            f"while score mean20 {mean20:.1f} is {mean20 / best:.0%} of the best mean100 "
            f"{best:.1f} (falling below {threshold:.1f})")

    def _score_collapse(self, mean20: float, mean100: float, best: float,
                        games: int) -> tuple[str, str] | None:
        threshold = (1.0 - self.config.score_drop) * best
        if mean20 >= threshold:
            return None
        return "score_collapse", (
            f"score mean20 {mean20:.1f} is {mean20 / best:.0%} of the best mean100 {best:.1f} "
            f"(limit {threshold:.1f}; mean100 {mean100:.1f}) after {games} games")

    def _remember(self, loss: float) -> None:
        if len(self._window) == self._window.maxlen:
            oldest = self._window[0]
            del self._sorted[bisect.bisect_left(self._sorted, oldest)]
        self._window.append(loss)
        bisect.insort(self._sorted, loss)

    def _quantile(self) -> float:
        """The critic_quantile of the window, by linear interpolation (numpy's default)."""
        position = self.config.critic_quantile * (len(self._sorted) - 1)
        low = math.floor(position)
        high = min(low + 1, len(self._sorted) - 1)
        return self._sorted[low] + (self._sorted[high] - self._sorted[low]) * (position - low)

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (only finite floats) for a checkpoint."""
        return {"window": list(self._window), "updates": self._updates,
                "critic_streak": self._critic_streak, "last_fired": dict(self._last_fired),
                "learning": self._learning}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reset()
        for loss in state["window"]:
            self._remember(float(loss))
        self._updates = int(state["updates"])
        self._critic_streak = int(state["critic_streak"])
        self._last_fired = {str(k): int(v) for k, v in state["last_fired"].items()}
        self._learning = bool(state["learning"])


def parse_reaction(text: str) -> str:
    """The reaction to a detected cliff: warn, rollback (to the best checkpoint with a
    lower learning rate) or stop."""
    if text not in REACTIONS:
        raise ValueError(f"--on-cliff must be one of {', '.join(REACTIONS)}, not '{text}'")
    return text
