"""The shipped agent: it loads by name and plays Breakout through gymnasium's own wrappers,
exactly as the README's example does."""

import re
from pathlib import Path

import numpy as np
import pytest

import atari_rl
from atari_rl.cli import main
from atari_rl.policy import PRETRAINED_ROOT

README = Path(__file__).resolve().parents[1] / "README.md"
NAME = "breakout-a2c"
pytestmark = pytest.mark.skipif(not (PRETRAINED_ROOT / NAME).is_dir(),
                                reason="pretrained/breakout-a2c is not in this checkout")


def readme_example() -> str:
    """The README's Python example that plays a whole game with the shipped agent."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    return next(block for block in blocks if "ALE/Breakout-v5" in block)


def test_the_readme_example_plays_with_the_shipped_agent(capsys):
    # The example plays a whole game; a cap on its loop keeps the test to a few hundred steps.
    code = readme_example().replace("while not done:", "for _ in range(400):\n    if done: break")
    exec(compile(code, "README.md", "exec"), {})
    score = float(capsys.readouterr().out.strip().splitlines()[-1])
    assert score >= 5, "the shipped agent should break bricks within 400 steps"


def test_load_policy_by_name_maps_stacks_to_actions():
    policy = atari_rl.load_policy(NAME)
    assert (policy.algo, policy.game, policy.num_actions) == ("a2c", "breakout", 4)
    obs = np.zeros((3, 4, 84, 84), dtype=np.uint8)
    for actions in (policy.act(obs), policy.act(obs, greedy=False), policy.act(obs, sample=True)):
        assert actions.shape == (3,) and actions.dtype == np.int64
        assert ((actions >= 0) & (actions < 4)).all()


def test_unknown_pretrained_name_is_one_line(capsys):
    assert main(["evaluate", "--pretrained", "pong-a2c"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown pretrained agent 'pong-a2c'" in err and NAME in err


def test_evaluate_pretrained_writes_under_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "--pretrained", NAME, "--games", "2", "--num-envs", "2",
                 "--max-frames", "2000"]) == 0
    assert (tmp_path / f"runs/pretrained-{NAME}/evaluation.json").is_file()


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def test_shipped_files_hold_no_absolute_path_of_the_machine_they_were_made_on():
    import json

    for path in sorted(PRETRAINED_ROOT.glob("*/*.json")):
        absolute = [s for s in _strings(json.loads(path.read_text())) if s.startswith("/")]
        assert absolute == [], path


def test_evaluate_records_what_it_played_without_an_absolute_path(tmp_path, monkeypatch):
    import json

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "evaluation.json"
    assert main(["evaluate", "--pretrained", NAME, "--games", "1", "--num-envs", "1",
                 "--max-frames", "400", "--protocols", "greedy,sticky", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["source"] == f"pretrained/{NAME}"
    assert list(result["protocols"]) == ["greedy", "sticky"]
    assert result["mean"] == result["protocols"]["greedy"]["mean"]  # the first is the headline
    sticky = result["protocols"]["sticky"]["protocol"]
    assert sticky["sticky_action_prob"] == 0.25 and sticky["actions"].startswith("epsilon")
    assert len(result["protocols"]["sticky"]["scores"]) == 1
