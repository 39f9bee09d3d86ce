"""Figures of a synthetic corpus (matplotlib, imported lazily; the ``eval`` extra)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from musicsearch.errors import MusicSearchError


def plot_tag_frequencies(
    stats: dict[str, Any] | str | os.PathLike[str], out: str | os.PathLike[str], *, top: int = 40
) -> Path:
    """Plot the tag frequency distribution of a corpus to a PNG.

    Left: every tag's clip count against its frequency rank (log scale), coloured by category, which shows the long
    tail. Right: the ``top`` most frequent tags as horizontal bars.

    Args:
        stats: the ``stats.json`` object of a corpus, or its path (or the corpus folder).
        out: PNG path to write.
        top: number of tags in the bar chart.

    Returns:
        The PNG path.

    Raises:
        MusicSearchError: if the statistics cannot be read or matplotlib is missing.
    """
    if not isinstance(stats, dict):
        p = Path(stats)
        if p.is_dir():
            p = p / "stats.json"
        try:
            stats = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise MusicSearchError(f"cannot read corpus statistics {p}: {exc}; make the corpus first") from None
    assert isinstance(stats, dict)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MusicSearchError("plotting needs matplotlib: pip install 'musicsearch[eval]'") from None

    rows = [(tag, cat, n) for cat, tags in stats["tag_frequency"].items() for tag, n in tags.items()]
    rows.sort(key=lambda r: (-r[2], r[0]))
    cats = list(dict.fromkeys(cat for _, cat, _ in rows))
    cmap = plt.get_cmap("tab20")
    colour = {c: cmap(i % 20) for i, c in enumerate(cats)}
    n_clips = max(1, int(stats.get("n_clips", 1)))

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 7), gridspec_kw={"width_ratios": [1.2, 1]})
    for cat in cats:
        xs = [i + 1 for i, r in enumerate(rows) if r[1] == cat]
        ys = [r[2] for r in rows if r[1] == cat]
        ax1.scatter(xs, ys, s=14, color=colour[cat], label=cat)
    ax1.set_yscale("log")
    ax1.set_xlabel("tag rank")
    ax1.set_ylabel("clips with the tag")
    tpc = stats.get("tags_per_clip", {})
    ax1.set_title(
        f"{len(rows)} tags used in {n_clips} clips; {tpc.get('mean', 0):.1f} tags a clip "
        f"({tpc.get('min', 0)}-{tpc.get('max', 0)})"
    )
    ax1.legend(fontsize=8, ncol=2, loc="upper right")
    ax1.grid(alpha=0.3, which="both")

    head = rows[:top][::-1]
    ax2.barh(range(len(head)), [r[2] / n_clips for r in head], color=[colour[r[1]] for r in head])
    ax2.set_yticks(range(len(head)))
    ax2.set_yticklabels([r[0] for r in head], fontsize=7)
    ax2.set_xlabel("fraction of clips")
    ax2.set_title(f"top {len(head)} tags")
    fig.tight_layout()
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
