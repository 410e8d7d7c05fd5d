"""`atari-rl report`: one self-contained HTML page, checked in a real headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from atari_rl.cli import main
from atari_rl.run_files import CONFIG_FILE, REPORT_FILE, TENSORBOARD_DIR

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install -y chromium)")


@pytest.fixture(scope="module")
def reported_run(tmp_path_factory, tiny_run):
    """A copy of the tiny run, evaluated against random play, recorded, then reported."""
    run = tmp_path_factory.mktemp("report") / "a2c-run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns(TENSORBOARD_DIR))
    quick = ["--games", "2", "--num-envs", "2", "--max-frames", "1000"]
    assert main(["evaluate", str(run), *quick]) == 0
    assert main(["evaluate", str(run), "--policy", "random", *quick]) == 0
    assert main(["record", str(run), "--max-frames", "200"]) == 0
    assert main(["report", str(run)]) == 0
    return run


def test_the_page_embeds_everything_it_shows(reported_run):
    page = (reported_run / REPORT_FILE).read_text()
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(s.startswith("data:") for s in sources)  # nothing to fetch
    assert sum(s.startswith("data:image/png;base64,") for s in sources) == 9
    assert sum(s.startswith("data:video/mp4;base64,") for s in sources) == 1
    assert "trained policy" in page and "random policy" in page
    assert "entropy_coef" in page  # the configuration


@needs_chromium
def test_chromium_loads_the_figures_and_the_video(reported_run, tmp_path):
    url = (reported_run / REPORT_FILE).as_uri()
    dom = _chromium(tmp_path / "profile-dom", "--virtual-time-budget=15000", "--dump-dom", url)
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert 'data-loaded="true"' in body, body
    assert 'data-images="9"' in body and 'data-videos="1"' in body
    screenshot = tmp_path / "report.png"
    _chromium(tmp_path / "profile-shot", "--virtual-time-budget=15000", "--window-size=1280,2000",
              f"--screenshot={screenshot}", url)
    with Image.open(screenshot) as image:
        assert image.size == (1280, 2000)
        assert np.unique(np.asarray(image.convert("L"))).size > 10  # a page, not a blank


def test_several_runs_get_a_comparison_table(tmp_path, reported_run, tiny_dqn_run):
    out = tmp_path / "compared.html"
    assert main(["report", str(reported_run), str(tiny_dqn_run), "--out", str(out)]) == 0
    page = out.read_text()
    assert "<h2>Comparison</h2>" in page
    assert "a2c-run (algo=a2c" in page and "dqn-run (algo=dqn" in page
    assert "Not evaluated yet" in page  # the DQN run has no evaluation.json
    assert "Double DQN on breakout" in page and "A2C on breakout" in page  # registry titles


@pytest.mark.parametrize(("setup", "extra", "complaint"), [
    ("missing", [], "does not exist"),
    ("not_a_run", [], "is not a run directory"),
    ("unknown_game", [], "unknown game 'nosuchgame'"),
    ("two_runs", [], "several runs need --out"),
    ("run", ["--out", "page.txt"], "--out must name an .html file"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, run_copy, capsys, setup,
                                                        extra, complaint):
    targets = [tmp_path / "missing"]
    if setup in ("not_a_run", "unknown_game"):
        targets = [tmp_path]
        if setup == "unknown_game":
            (tmp_path / CONFIG_FILE).write_text('{"algo": "a2c", "game": "nosuchgame"}')
    elif setup in ("two_runs", "run"):
        targets = [run_copy(name="a")] + ([run_copy(name="b")] if setup == "two_runs" else [])
    before = set(tmp_path.rglob("*"))
    assert main(["report", *map(str, targets), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert complaint in err and len(err.splitlines()) == 1
    assert set(tmp_path.rglob("*")) == before


def _chromium(profile, *args):
    """Run headless Chromium with a fresh profile; returns what it printed on stdout."""
    done = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120, check=True)
    return done.stdout
