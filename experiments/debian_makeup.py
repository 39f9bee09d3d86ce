"""Genre, mood and vocal make-up of the gathered Debian music, measured with the musicnn teachers.

For every track of a ``musicsearch gather debian`` manifest, ``--windows`` musicnn patches (3 s each, at evenly
spaced fractions of the track: 25/50/75 % for 3, the middle for 1) are tagged by MTT_musicnn and MSD_musicnn; a
track's tag probabilities are the mean over its windows, a package's the mean over its tracks. Per package it reports

* the top MSD genre tags and the top MTT genre tags (mean probability);
* the top MSD mood tags and MTT descriptors (slow / fast / loud / quiet / soft / weird);
* the share of tracks whose top tag among the issue's four genres (MTT ``classical``; MSD ``rock``, ``pop``,
  ``electronic``) is each genre;
* the vocal share: tracks where some MTT vocal tag (vocal, singing, female, male voice, choir, ...) reaches 0.2.

Usage (CPU is scarce: about 1 s of tagging per track on a shared 2-core box)::

    nice -n 10 .venv/bin/python experiments/debian_makeup.py --manifest data/debian-music/manifest.jsonl \
        --out data/debian-music/makeup.json
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from musicsearch.audio.io import load_audio
from musicsearch.data.manifest import read_manifest
from musicsearch.errors import AudioError
from musicsearch.teachers.tagger import MusicnnTagger

logger = logging.getLogger("debian_makeup")

MSD_GENRES = (
    "rock", "pop", "alternative", "indie", "electronic", "dance", "jazz", "metal", "chillout", "classic rock", "soul",
    "indie rock", "electronica", "folk", "punk", "blues", "hard rock", "ambient", "experimental", "Hip-Hop",
    "country", "funk", "electro", "heavy metal", "Progressive rock", "rnb", "indie pop", "House", "alternative rock",
    "easy listening", "oldies",
)  # fmt: skip
MTT_GENRES = ("classical", "techno", "electronic", "rock", "ambient", "indian", "opera", "pop", "new age", "dance",
              "country", "metal")  # fmt: skip
MSD_MOODS = ("beautiful", "Mellow", "chill", "sad", "happy", "sexy", "catchy", "party")
MTT_DESCRIPTORS = ("slow", "fast", "loud", "quiet", "soft", "weird")
MTT_VOCAL = ("vocal", "vocals", "singing", "female", "male", "woman", "man", "voice", "male vocal", "female vocal",
             "male voice", "female voice", "choir", "choral", "opera")  # fmt: skip
#: A track counts as having vocals when one MTT vocal tag reaches this probability (mean over its windows).
VOCAL_EVIDENCE = 0.2
FOUR = (("MTT", "classical"), ("MSD", "rock"), ("MSD", "pop"), ("MSD", "electronic"))


def window_patches(tagger: MusicnnTagger, path: str, duration: float, n_windows: int) -> torch.Tensor:
    """``(n_windows, 187, 96)`` log-mel patches, one 3 s window centred at each of ``n_windows`` even fractions."""
    sr = tagger.front_end.sample_rate
    seconds = 3.0 + 0.1  # a musicnn patch is 187 frames of 256 samples at 16 kHz (2.99 s); a little margin
    out = []
    for k in range(n_windows):
        centre = duration * (k + 1) / (n_windows + 1)
        start = max(0.0, min(centre - seconds / 2, duration - seconds))
        wave = load_audio(path, sample_rate=sr, offset=start, duration=seconds)
        out.append(tagger.patches(wave)[:1])
    return torch.cat(out)


def top(mean: dict[str, float], names: tuple[str, ...], k: int) -> list[tuple[str, float]]:
    return sorted(((n, mean[n]) for n in names), key=lambda x: -x[1])[:k]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--windows", type=int, default=3)
    ap.add_argument(
        "--out", type=Path, required=True, help="JSON with per-track and per-package results (resumed if present)"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reuse", type=Path, nargs="*", default=[], help="earlier --out files whose tracks are reused")
    ap.add_argument("--packages", default=None, help="comma-separated: tag only these packages' tracks")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    taggers = {"MTT": MusicnnTagger.load("MTT_musicnn"), "MSD": MusicnnTagger.load("MSD_musicnn")}
    tracks = read_manifest(args.manifest)
    per_track: dict[str, dict[str, Any]] = {}
    for prev in [args.out, *args.reuse]:  # tracks tagged by earlier runs are not tagged again
        if prev.is_file():
            old = json.loads(prev.read_text())["tracks"]
            per_track.update({t.track_id: old[t.track_id] for t in tracks if t.track_id in old})
    if args.packages:
        wanted = set(args.packages.split(","))
        tracks = [t for t in tracks if t.metadata["package"] in wanted or t.track_id in per_track]
    t0 = time.perf_counter()
    for i, t in enumerate(tracks):
        if t.track_id in per_track:
            continue
        try:
            batch = window_patches(taggers["MTT"], t.audio_path, float(t.metadata["duration"]), args.windows)
        except AudioError as exc:
            logger.warning("skipping %s: %s", t.track_id, exc)
            continue
        rec: dict[str, Any] = {
            "package": t.metadata["package"],
            "duration": float(t.metadata["duration"]),
            "windows": args.windows,
        }
        for name, tagger in taggers.items():
            probs, _ = tagger.run_patches(batch)  # (windows, 50)
            rec[name] = dict(zip(tagger.tags, probs.mean(axis=0).round(4).tolist(), strict=True))
        per_track[t.track_id] = rec
        if (i + 1) % 100 == 0:
            logger.info("%d/%d tracks, %.1f s/track", i + 1, len(tracks), (time.perf_counter() - t0) / (i + 1))

    by_pkg: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rec in per_track.values():
        by_pkg[rec["package"]].append(rec)
    summary: dict[str, Any] = {}
    for pkg, recs in [*by_pkg.items(), ("ALL", list(per_track.values()))]:
        mean = {m: {tag: float(np.mean([r[m][tag] for r in recs])) for tag in recs[0][m]} for m in ("MTT", "MSD")}
        four = [max(FOUR, key=lambda mt, r=r: r[mt[0]][mt[1]])[1] for r in recs]
        vocal = [max(r["MTT"][x] for x in MTT_VOCAL) >= VOCAL_EVIDENCE for r in recs]
        summary[pkg] = {
            "tracks": len(recs),
            "windows": sorted({int(r.get("windows", 3)) for r in recs}),
            "hours": sum(r["duration"] for r in recs) / 3600,
            "msd_genre": top(mean["MSD"], MSD_GENRES, 3),
            "mtt_genre": top(mean["MTT"], MTT_GENRES, 3),
            "msd_mood": top(mean["MSD"], MSD_MOODS, 2),
            "mtt_descriptor": top(mean["MTT"], MTT_DESCRIPTORS, 2),
            "four_genre_share": {g: four.count(g) / len(four) for _, g in FOUR},
            "vocal_share": float(np.mean(vocal)),
        }
    args.out.write_text(json.dumps({"packages": summary, "tracks": per_track}, indent=1))

    def fmt(pairs: list[tuple[str, float]]) -> str:
        return ", ".join(f"{n} {p:.2f}" for n, p in pairs)

    print("| package | tracks | hours | windows | MSD genre | MTT genre | MSD mood | MTT descriptor ", end="")
    print("| 4-genre top (cl/ro/po/el %) | vocal % |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for pkg, s in summary.items():
        four_pct = "/".join(f"{100 * s['four_genre_share'][g]:.0f}" for _, g in FOUR)
        print(
            f"| {pkg} | {s['tracks']} | {s['hours']:.2f} | {'/'.join(map(str, s['windows']))} | "
            f"{fmt(s['msd_genre'])} | {fmt(s['mtt_genre'])} | "
            f"{fmt(s['msd_mood'])} | {fmt(s['mtt_descriptor'])} | {four_pct} | {100 * s['vocal_share']:.0f} |"
        )


if __name__ == "__main__":
    main()
