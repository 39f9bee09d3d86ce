"""Issue 13's comparison: candidate models with pretrained musicnn towers against the shipped ones.

For every model: the procedural corpus' test split (tag retrieval top-50, sentence retrieval, unseen words), the
held-out real recordings' windows against the teachers' calibrated tags (``OUT/real_test.jsonl`` of
``experiments/soft_recipe.py``), genre agreement with the teachers on those recordings (the teachers' own genre
words as text queries; the student's top genre per recording against the teachers' top genre, probabilities
averaged over the recording's windows, from the cached features), and the eight shipped real recordings' MRR
(``experiments/distill_compare.py``'s queries). With ``--vgmidi``, VGMIDI zero-shot (on the test split and on all 204
pieces) and the probe; the probe is the mean over ``--probe-seeds`` seeds (5), since one seed moves it by a piece
or more.

Usage::

    .venv/bin/python experiments/soft_compare.py --models default,procedural,cand=runs/soft/both-small.safetensors \
        --soft runs/soft --corpus data/corpus/manifest.jsonl --out runs/compare
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distill_compare import VGMIDI, _pct, corpus_and_real, librosa_mrr, load_for_table, vgmidi_cells

from musicsearch.fileio import write_json
from musicsearch.train.heads import TEACHER_GENRES

log = logging.getLogger("soft_compare")

#: The teachers' genre tags (MSD and MTT), merged as in the pseudo-labels; each is its own text query.
GENRES = TEACHER_GENRES
#: The issue's held-out test's four genres (its "4 genre names as text queries"), a subset of GENRES.
GENRES4 = ("classical", "rock", "electronic", "pop")


def teacher_genres(soft_dir: Path, genres: tuple[str, ...] = GENRES) -> tuple[list[str], list[str], np.ndarray]:
    """Held-out recordings, their windows' ids grouped, and the teachers' top genre per recording (an index into
    ``genres``, the teachers' merged probabilities of those words averaged over the recording's windows)."""
    from musicsearch.data.manifest import read_manifest
    from musicsearch.teachers.musicnn import MSD_LABELS, MTT_LABELS
    from musicsearch.teachers.pseudolabel import merge_probs, merged_vocabulary
    from musicsearch.train.heads import load_features

    windows = read_manifest(soft_dir / "windows.jsonl")
    feats = load_features(windows, soft_dir / "features" / "real")
    vocab, columns = merged_vocabulary([MSD_LABELS, MTT_LABELS])
    merged = merge_probs([feats.probs[:, :50], feats.probs[:, 50:100]], columns, len(vocab))
    gcols = [vocab.index(g) for g in genres]
    recs = sorted({str(w.metadata["track"]) for w in windows if w.split == "test"})
    top = []
    for r in recs:
        rows = [i for i, w in enumerate(windows) if w.metadata["track"] == r]
        top.append(int(np.argmax(merged[rows][:, gcols].mean(axis=0))))
    return recs, [w.track_id for w in windows if w.split == "test"], np.array(top)


def genre_agreement(model: Any, soft_dir: Path, recs: list[str], top: np.ndarray,
                    genres: tuple[str, ...] = GENRES) -> float:  # fmt: skip
    """Share of held-out recordings whose student top genre among ``genres`` (mean window embedding vs the genre
    words as text) equals the teachers' (``top``, indices into ``genres``)."""
    from musicsearch.data.manifest import read_manifest
    from musicsearch.models.inference import embed_texts, embed_windows, normalize
    from musicsearch.train.heads import load_window

    windows = [w for w in read_manifest(soft_dir / "windows.jsonl") if w.split == "test"]
    wave = np.stack([load_window(w, model.config.audio.window_samples) for w in windows])
    emb = embed_windows(model, wave, batch_size=16)
    text = normalize(embed_texts(model, list(genres)))
    hits = []
    for r, t in zip(recs, top):
        rows = [i for i, w in enumerate(windows) if w.metadata["track"] == r]
        track = normalize(emb[rows].mean(axis=0, keepdims=True))
        hits.append(int(np.argmax(track @ text.T)) == int(t))
    return float(np.mean(hits))


def evaluate(name: str, ref: str, args: argparse.Namespace, recs: list[str], top: np.ndarray,
             top4: np.ndarray) -> dict[str, Any]:  # fmt: skip
    model, info = load_for_table(name, ref)
    t0 = time.perf_counter()
    out = corpus_and_real(model, info, corpus=args.corpus, real_test=str(Path(args.soft) / "real_test.jsonl"))
    out["genre_agreement"] = genre_agreement(model, Path(args.soft), recs, top)
    out["genre4_agreement"] = genre_agreement(model, Path(args.soft), recs, top4, GENRES4)
    out["librosa"] = librosa_mrr(model)
    if args.vgmidi:
        from musicsearch.eval.suites import SuiteOptions, run_suite

        opts = SuiteOptions(datasets=tuple((d, args.vgmidi) for d in VGMIDI), seed=0, probe_seeds=args.probe_seeds)
        # the probe first: it embeds the whole datasets, which both zero-shot runs then read from the cache
        out["probe"] = run_suite(model, "probe", opts, model_info=out["model"])["results"]["probe"]
        out["zeroshot"] = run_suite(model, "zeroshot", opts, model_info=out["model"])["results"]["zeroshot"]
        every = dataclasses.replace(opts, zeroshot_split="all")  # all 204 pieces: five times the test split
        out["zeroshot_all"] = run_suite(model, "zeroshot", every, model_info=out["model"])["results"]["zeroshot"]
    out["seconds"] = time.perf_counter() - t0
    return out


def _seeds(r: dict[str, Any]) -> str:
    """How many probing seeds a row's VGMIDI probe averages (older results: one, seed 0)."""
    if "probe" not in r:
        return ""
    n = {len(res.get("seeds", [0])) for res in r["probe"].values()}
    return f" ({'/'.join(map(str, sorted(n)))} seeds)" if n != {1} else " (seed 0)"


def table(results: dict[str, dict[str, Any]]) -> str:
    rows = [
        "| model | corpus tags top50 ROC / PR | corpus sentence R@1 | corpus unseen ROC | real held-out tags ROC / PR "
        "| genre agreement with teachers | 4-genre agreement | 8 real recordings MRR (top-1) "
        "| VGMIDI zero-shot Q / V / A | VGMIDI zero-shot, all 204 pieces | the same, balanced accuracy "
        "| VGMIDI probe Q / V / A |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        c, real = r["corpus"], r["real"]
        rows.append(
            f"| {name} | {_pct(c['tags']['top50']['roc_auc'])} / {_pct(c['tags']['top50']['pr_auc'])} "
            f"| {_pct(c['sentence']['R@1'])} | {_pct(c.get('unseen', {}).get('roc_auc'))} "
            f"| {_pct(real['tags']['all']['roc_auc'])} / {_pct(real['tags']['all']['pr_auc'])} "
            f"| {_pct(r['genre_agreement'])} | {_pct(r.get('genre4_agreement'))} "
            f"| {r['librosa']['mrr']:.3f} ({_pct(r['librosa']['top1'])}) "
            f"| {vgmidi_cells(r, 'zeroshot')} | {vgmidi_cells(r, 'zeroshot_all')} "
            f"| {vgmidi_cells(r, 'zeroshot_all', balanced=True)} "
            f"| {vgmidi_cells(r, 'probe')}{_seeds(r)} |"
        )
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="default", help="comma-separated NAME or LABEL=REF")
    ap.add_argument("--soft", default="runs/soft")
    ap.add_argument("--corpus", default="data/corpus/manifest.jsonl")
    ap.add_argument("--out", default="runs/compare")
    ap.add_argument("--vgmidi", default=None, help="VGMIDI folder: also zero-shot and probing on its three tasks")
    ap.add_argument("--probe-seeds", type=int, default=5,
                    help="VGMIDI probe: mean over this many seeds (0, 1, ...); one piece is 2.5 points")  # fmt: skip
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    recs, _, top = teacher_genres(Path(args.soft))
    _, _, top4 = teacher_genres(Path(args.soft), GENRES4)
    log.info("%d held-out recordings; teachers' top genres: %s", len(recs), [GENRES[i] for i in top])
    results: dict[str, Any] = {}
    for item in args.models.split(","):
        label, _, ref = item.partition("=")
        ref = ref or label
        path = out / f"{label}.json"
        if path.is_file():
            results[label] = json.loads(path.read_text(encoding="utf-8"))
            continue
        results[label] = evaluate(label, ref, args, recs, top, top4)
        write_json(path, results[label])
        log.info("%s done in %.0f s", label, results[label]["seconds"])
    md = table(results)
    (out / "report.md").write_text(md + "\n", encoding="utf-8")
    print(md)


if __name__ == "__main__":
    main()
