"""Issue 8's comparison: the default model before and after teacher-student adaptation, and the musicnn teachers.

Evaluates each model on

* the procedural corpus' test split (tag retrieval top-50 / all, sentence retrieval, unseen queries);
* held-out real recordings (whole recordings never trained on, ``OUT/real_test.jsonl`` from ``musicsearch adapt``):
  tag retrieval against the teachers' calibrated pseudo-tags;
* VGMIDI mood (human valence / arousal labels, rendered MIDI): zero-shot and MLP probing;
* the eight real recordings shipped in ``musicsearch/assets/librosa_music``: each is the answer to one free-text
  query written from its description, rank among the eight (mean reciprocal rank);

and the teachers (musicnn MTT and MSD) on VGMIDI: probing their penultimate features, zero-shot valence from the
MSD tags ``happy`` / ``sad`` (the other label sets have no teacher tag).

Usage::

    .venv/bin/python experiments/distill_compare.py --adapted runs/adapt/run --real-test runs/adapt/real_test.jsonl \
        --vgmidi ../shared/data/vgmidi --out runs/distill
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from musicsearch.fileio import write_json

log = logging.getLogger("distill_compare")

#: librosa_music recording stem -> a query written from its description (not from any model's tags).
QUERIES: dict[str, str] = {
    "admiralbob77-choice-drum-bass": "energetic electronic drum and bass",
    "brahms-hungarian-dance-5-string-orchestra": "classical string orchestra with violins",
    "karissa-hobbs-lets-go-fishin": "acoustic folk song with a female singer",
    "kevin-macleod-sugar-plum-fairy": "gentle celesta, classical ballet music",
    "kevin-macleod-vibe-ace": "relaxed jazz with vibraphone",
    "lena-orsa-pistachio-ice-cream-ragtime": "ragtime piano",
    "setuniman-sweet-waltz": "sweet slow waltz",
    "sorohanro-solo-trumpet": "solo trumpet",
}
VGMIDI = ("vgmidi-quadrant", "vgmidi-valence", "vgmidi-arousal")


def _pct(x: Any) -> str:
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * float(x):.1f}"


def balanced_accuracy(res: dict[str, Any]) -> float | None:
    """A single-label result's balanced accuracy: its own figure, or (results older than it) the mean of its
    ``per_class`` recalls."""
    from musicsearch.eval.metrics import mean_class_recall

    if res.get("balanced_accuracy") is not None:
        return float(res["balanced_accuracy"])
    return mean_class_recall(res["per_class"]) if res.get("per_class") else None


def vgmidi_cells(r: dict[str, Any], suite: str, balanced: bool = False) -> str:
    """The three VGMIDI accuracies (quadrant / valence / arousal) of one suite's results in ``r``, in percent
    (``-`` when the suite was not run); ``balanced``: their balanced accuracies instead."""
    if suite not in r:
        return "-"
    res = [r[suite].get(d, {}) for d in VGMIDI]
    return " / ".join(_pct(balanced_accuracy(x) if balanced else x.get("accuracy")) for x in res)


def librosa_mrr(model: Any) -> dict[str, Any]:
    """Rank of each librosa_music recording for its query among the eight (8 windows a recording)."""
    from musicsearch.assets import librosa_music_dir
    from musicsearch.data.manifest import Track
    from musicsearch.eval.embeddings import embed_tracks
    from musicsearch.models.inference import embed_texts, normalize

    stems = sorted(QUERIES)
    tracks = [Track(s, str(librosa_music_dir() / f"{s}.ogg")) for s in stems]
    emb = embed_tracks(model, tracks, dataset="librosa_music", n_windows=8, use_cache=False)
    audio = normalize(np.asarray(emb.embeddings, dtype=np.float32))
    text = normalize(np.asarray(embed_texts(model, [QUERIES[s] for s in stems]), dtype=np.float32))
    sims = text @ audio.T  # (queries, recordings)
    ranks = [int((sims[i] > sims[i, i]).sum()) + 1 for i in range(len(stems))]
    return {"ranks": dict(zip(stems, ranks)), "mrr": float(np.mean([1.0 / r for r in ranks])),
            "top1": float(np.mean([r == 1 for r in ranks]))}  # fmt: skip


def load_for_table(name: str, ref: str) -> tuple[Any, dict[str, Any]]:
    """Model ``ref`` and its info (as the report names it)."""
    from musicsearch.models.loading import resolve_model

    resolved = resolve_model(ref)
    return resolved.model, {**resolved.info(), "name": name}


def corpus_and_real(model: Any, info: dict[str, Any], *, corpus: str, real_test: str) -> dict[str, Any]:
    """Scores on the corpus test split (3 windows a clip) and on held-out real windows against the teachers' tags
    (1 window, 200 captions): ``{"model", "corpus", "real"}``."""
    from musicsearch.eval.suites import SuiteOptions, run_suite

    out: dict[str, Any] = {"model": info}
    out["corpus"] = run_suite(model, "corpus", SuiteOptions(manifest=corpus, split="test", n_windows=3),
                              model_info=info)["results"]["corpus"]  # fmt: skip
    out["real"] = run_suite(model, "corpus", SuiteOptions(manifest=real_test, split="test", n_windows=1,
                            n_captions=200), model_info=info)["results"]["corpus"]  # fmt: skip
    return out


def evaluate_model(name: str, ref: str, args: argparse.Namespace) -> dict[str, Any]:
    from musicsearch.eval.suites import SuiteOptions, run_suite

    model, info = load_for_table(name, ref)
    t0 = time.perf_counter()
    out = corpus_and_real(model, info, corpus=args.corpus, real_test=args.real_test)
    datasets = tuple((d, args.vgmidi) for d in VGMIDI)
    opts = SuiteOptions(datasets=datasets, seed=0)
    out["probe"] = run_suite(model, "probe", opts, model_info=info)["results"]["probe"]
    out["zeroshot"] = run_suite(model, "zeroshot", opts, model_info=info)["results"]["zeroshot"]
    out["librosa"] = librosa_mrr(model)
    out["seconds"] = time.perf_counter() - t0
    return out


def evaluate_teachers(args: argparse.Namespace) -> dict[str, Any]:
    from musicsearch.data.sources.registry import load_dataset
    from musicsearch.eval.baselines import musicnn_features, musicnn_probe, musicnn_zeroshot
    from musicsearch.teachers.tagger import MusicnnTagger

    out: dict[str, Any] = {}
    sets = {d: load_dataset(d, args.vgmidi) for d in VGMIDI}
    tracks = sets[VGMIDI[0]].tracks  # the three share their pieces and order
    for teacher in ("MTT_musicnn", "MSD_musicnn"):
        t0 = time.perf_counter()
        feats = musicnn_features(MusicnnTagger.load(teacher), tracks)
        res: dict[str, Any] = {"probe": {}, "zeroshot": {}}
        for d, ds in sets.items():
            assert [t.track_id for t in ds.tracks] == [t.track_id for t in tracks]
            res["probe"][d] = musicnn_probe(feats, ds)
            try:
                res["zeroshot"][d] = musicnn_zeroshot(feats, ds)
            except Exception as exc:  # the teacher has no tag for a label: reported, not scored
                res["zeroshot"][d] = {"accuracy": None, "note": str(exc)}
        res["seconds"] = time.perf_counter() - t0
        out[teacher] = res
    return out


def table(models: dict[str, dict[str, Any]], teachers: dict[str, Any]) -> str:
    rows = [
        "| model | corpus tags top50 ROC / PR | corpus sentence R@10 | corpus unseen ROC | real held-out tags ROC / PR "
        "| VGMIDI zero-shot Q / V / A | VGMIDI probe Q / V / A | 8 real recordings MRR (top-1) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in models.items():
        c, real = r["corpus"], r["real"]
        zs, pr = vgmidi_cells(r, "zeroshot"), vgmidi_cells(r, "probe")
        rows.append(
            f"| {name} | {_pct(c['tags']['top50']['roc_auc'])} / {_pct(c['tags']['top50']['pr_auc'])} "
            f"| {_pct(c['sentence']['R@10'])} | {_pct(c.get('unseen', {}).get('roc_auc'))} "
            f"| {_pct(real['tags']['all']['roc_auc'])} / {_pct(real['tags']['all']['pr_auc'])} | {zs} | {pr} "
            f"| {r['librosa']['mrr']:.3f} ({_pct(r['librosa']['top1'])}) |"
        )
    for name, r in teachers.items():
        zs, pr = vgmidi_cells(r, "zeroshot"), vgmidi_cells(r, "probe")
        rows.append(f"| {name} (teacher) | - | - | - | (the truth) | {zs} | {pr} | - |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", default="default")
    ap.add_argument("--adapted", default="runs/adapt/run")
    ap.add_argument("--corpus", default="data/corpus/manifest.jsonl")
    ap.add_argument("--real-test", default="runs/adapt/real_test.jsonl")
    ap.add_argument("--vgmidi", default="../shared/data/vgmidi")
    ap.add_argument("--out", default="runs/distill")
    ap.add_argument("--skip-teachers", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.manual_seed(0)
    out = Path(args.out)
    results: dict[str, Any] = {}
    for name, ref in (("before (default)", args.before), ("after (adapted)", args.adapted)):
        path = out / f"{name.split()[0]}.json"
        if path.is_file():
            results[name] = json.loads(path.read_text(encoding="utf-8"))
            continue
        results[name] = evaluate_model(name, ref, args)
        write_json(path, results[name])
    teachers: dict[str, Any] = {}
    if not args.skip_teachers:
        path = out / "teachers.json"
        teachers = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else evaluate_teachers(args)
        write_json(path, teachers)
    md = table(results, teachers)
    (out / "report.md").write_text(md + "\n", encoding="utf-8")
    print(md)


if __name__ == "__main__":
    main()
