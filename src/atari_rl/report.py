"""One self-contained HTML page about one or several runs, from their run directories alone.

Figures (rendered from the CSVs on the spot), the evaluation against the random baseline
(evaluation.json and evaluation-random.json, written by `atari-rl evaluate`), the video
(video.mp4, written by `atari-rl record`) and the configuration. Images and video are
embedded as base64 data URIs, so the page can be mailed or archived and opened without a
network or the run directory. A script marks `<body data-loaded="true">` once every image
is decoded and the video has its metadata (or "error"), so a headless browser can check it.
"""

from __future__ import annotations

import base64
import html
import time
from pathlib import Path
from typing import Any

from atari_rl.algorithms import algorithms
from atari_rl.checkpoints import atomic_write, read_json
from atari_rl.plots import RunData, label_runs, load_run, render_figures
from atari_rl.run_files import (
    CONFIG_FILE,
    EVALUATION_FILE,
    GAMES_FILE,
    GIF_FILE,
    METRICS_FILE,
    RANDOM_EVALUATION_FILE,
    VIDEO_FILE,
    VIDEO_INFO_FILE,
)

STATS = ("mean", "median", "std", "min", "max")

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1000px; margin: 2em auto; padding: 0 1em;
       color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
.meta, .hint { color: #666; } .hint code { background: #f3f3f3; padding: 0 0.3em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child, td:last-child, th:last-child { text-align: left; }
img { max-width: 100%; display: block; margin: 0.5em 0 1.5em; }
video { max-width: 100%; background: #111; }
details table td { text-align: left; }
"""

READY_SCRIPT = """
(function () {
  function check() {
    const images = Array.from(document.images);
    const videos = Array.from(document.querySelectorAll('video'));
    const broken = images.filter(i => i.complete && i.naturalWidth === 0).length
                 + videos.filter(v => v.error).length;
    const ready = images.every(i => i.complete && i.naturalWidth > 0)
               && videos.every(v => v.readyState >= 1);
    document.body.dataset.images = images.filter(i => i.naturalWidth > 0).length;
    document.body.dataset.videos = videos.filter(v => v.readyState >= 1).length;
    if (broken) { document.body.dataset.loaded = 'error'; }
    else if (ready) { document.body.dataset.loaded = 'true'; }
    else { setTimeout(check, 50); }
  }
  window.addEventListener('load', check);
})();
"""


def load_runs(paths: list[Path]) -> list[RunData]:
    """The runs, labelled for legends and tables; ValueError when a path is not a run."""
    runs = [load_run(path) for path in paths]
    label_runs(runs)
    return runs


def build_report(runs: list[RunData], x: str = "steps") -> str:
    """The whole page as one string."""
    title = runs[0].label if len(runs) == 1 else f"{len(runs)} runs compared"
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>atari-rl report: {_e(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">Generated {time.strftime("%Y-%m-%d %H:%M")} by atari-rl from '
        f"{', '.join(_e(str(r.path)) for r in runs)}.</p>",
    ]
    if len(runs) > 1:
        parts += ["<h2>Comparison</h2>", _comparison_table(runs),
                  _figures(render_figures(runs, x))]
    for run in runs:
        parts.append(_run_section(run, with_figures=len(runs) == 1, x=x))
    parts += [f"<script>{READY_SCRIPT}</script>", "</body></html>"]
    return "\n".join(parts)


def write_report(runs: list[RunData], out: Path, x: str = "steps") -> Path:
    page = build_report(runs, x)
    atomic_write(out, lambda p: p.write_text(page, encoding="utf-8"))
    return out


def _run_section(run: RunData, with_figures: bool, x: str) -> str:
    heading = "" if with_figures else f"<h2>{_e(run.label)}</h2>"  # one run: the page's title
    parts = [f"<section>{heading}", f"<p>{_e(_summary(run))}</p>",
             "<h3>Evaluation</h3>", _evaluation(run), "<h3>Video</h3>", _video(run)]
    if with_figures:
        parts += ["<h3>Training</h3>", _figures(render_figures([run], x))]
    parts += [f"<details><summary>Configuration ({CONFIG_FILE})</summary>",
              _table(["setting", "value"], [[k, v] for k, v in run.config.items()]),
              "</details></section>"]
    return "\n".join(parts)


def _summary(run: RunData) -> str:
    config, metrics, games = run.config, run.metrics, run.games
    trained = int(metrics["step"][-1]) if "step" in metrics and len(metrics["step"]) else 0
    algorithm = algorithms().get(config.get("algo", ""))
    name = algorithm.title if algorithm else config.get("algo", "?").upper()
    text = (f"{name} on {config.get('game')}: "
            f"{trained:,} of {config.get('steps', 0):,} agent steps logged")
    if games:
        text += (f", {len(games['score']):,} games; last 100 games' mean "
                 f"{games['mean100'][-1]:.1f}, best {games['best'][-1]:g}")
    return text + "."


def _evaluation(run: RunData) -> str:
    trained, random = _read(run.path / EVALUATION_FILE), _read(run.path / RANDOM_EVALUATION_FILE)
    if trained is None and random is None:
        return _hint(f"Not evaluated yet: atari-rl evaluate {run.path} ; "
                     f"atari-rl evaluate {run.path} --policy random")
    rows = [[name, r["games"], *(f"{r[s]:.2f}" for s in STATS),
             r["protocol"].get("actions", ""), _conditions(r["protocol"])]
            for name, r in (("trained policy", trained), ("random policy", random)) if r]
    parts = [_table(["policy", "games", *STATS, "actions", "conditions"], rows)]
    if trained and random:
        gain = trained["mean"] - random["mean"]
        parts.append(f"<p>The trained policy scores {gain:+.2f} points per game against "
                     f"random play.</p>")
        if _conditions(trained["protocol"]) != _conditions(random["protocol"]):
            parts.append(_hint("The two evaluations played under different conditions: "
                               "compare with care."))
    elif trained:
        parts.append(_hint(f"No random baseline yet: atari-rl evaluate {run.path} "
                           f"--policy random"))
    else:
        parts.append(_hint(f"The trained policy is not evaluated yet: atari-rl evaluate "
                           f"{run.path}"))
    return "\n".join(parts)


def _conditions(protocol: dict[str, Any]) -> str:
    """The game conditions of an evaluation, which a fair comparison keeps equal."""
    sticky = protocol.get("sticky_action_prob", 0)
    return (f"up to {protocol.get('noop_max')} no-op frames, "
            f"{f'sticky {sticky:g}' if sticky else 'no sticky actions'}, "
            f"cap {protocol.get('max_frames_per_game', 0):,} frames, seed {protocol.get('seed')}")


def _video(run: RunData) -> str:
    path = run.path / VIDEO_FILE
    if not path.is_file():
        gif = run.path / GIF_FILE  # a shipped agent carries a short GIF instead
        if gif.is_file():
            data = base64.b64encode(gif.read_bytes()).decode("ascii")
            return (f'<img alt="the agent playing" src="data:image/gif;base64,{data}">'
                    f'<p class="meta">{_e("The start of a game, one frame per agent step.")}</p>')
        return _hint(f"No video yet: atari-rl record {run.path}")
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    info = _read(run.path / VIDEO_INFO_FILE) or {}
    caption = "; ".join(
        f"game {i}: {g['score']:g} points in {g['frames']:,} frames"
        + (" (frame cap)" if g.get("capped") else "")
        for i, g in enumerate(info.get("games", []), start=1))
    if info:
        caption += (f". {info.get('fps', 60)} fps, one video frame per emulator frame; "
                    f"beside the screen: the agent's {info.get('values', 'action values')}.")
    return (f'<video controls muted loop playsinline preload="metadata" '
            f'src="data:video/mp4;base64,{data}"></video><p class="meta">{_e(caption)}</p>')


def _figures(figures: dict[str, bytes]) -> str:
    if not figures:
        return _hint(f"No {METRICS_FILE} or {GAMES_FILE} rows yet.")
    return "\n".join(
        f'<img alt="{_e(name.removesuffix(".png"))}" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'
        for name, png in figures.items())


def _comparison_table(runs: list[RunData]) -> str:
    rows = []
    for run in runs:
        metrics, games = run.metrics, run.games
        trained = _read(run.path / EVALUATION_FILE)
        random = _read(run.path / RANDOM_EVALUATION_FILE)
        rows.append([
            run.label,
            run.config.get("algo", "?"),
            run.config.get("game", "?"),
            f"{int(metrics['step'][-1]):,}" if "step" in metrics else "-",
            f"{len(games['score']):,}" if games else "0",
            f"{games['mean100'][-1]:.1f}" if games else "-",
            f"{games['best'][-1]:g}" if games else "-",
            f"{trained['mean']:.1f} ± {trained['std']:.1f} ({trained['games']})"
            if trained else "-",
            f"{random['mean']:.1f}" if random else "-",
        ])
    return _table(["run", "algo", "game", "agent steps", "games", "mean of last 100",
                   "best", "evaluation mean ± std (games)", "random mean"], rows)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _hint(text: str) -> str:
    return f'<p class="hint">{_e(text)}</p>'


def _read(path: Path) -> dict[str, Any] | None:
    return read_json(path) if path.is_file() else None


def _e(value: Any) -> str:
    return html.escape(str(value))
