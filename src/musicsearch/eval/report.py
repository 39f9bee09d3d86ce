"""Evaluation reports: every number as JSON, and Markdown tables laid out like the paper's Tables 2 and 4.

``report.json`` holds the complete results of :func:`musicsearch.eval.suites.run_suite` for one or more models.
``report.md`` holds

* **Retrieval** (Table 2): one row per (model, dataset): 50-tag ROC/PR, all-tag ROC/PR, R@1, R@5, R@10, mAP@10
  and the median rank (counted from 1 and from 0); on ECALS the paper's published row of the same model family
  is printed beside ours, labelled as such.
* **Unseen queries**: ROC/PR of the held-out words and, as the reference, of the tags they stand for.
* **Transfer** (Table 4): zero-shot and probing, one column per dataset with its metric; the paper's published
  numbers (its contrastive BERT stochastic model) are a labelled row where the dataset is one of its datasets.

Numbers are printed in percent with one decimal, as in the paper; the JSON keeps fractions.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from musicsearch.errors import MusicSearchError
from musicsearch.fileio import atomic_write, write_json
from musicsearch.losses.registry import OBJECTIVES

__all__ = [
    "REPORT_FILE_FORMAT",
    "markdown_report",
    "paper_row_for",
    "to_jsonable",
    "write_report",
]

REPORT_FILE_FORMAT = "musicsearch-eval-report/1"
DASH = "–"


def to_jsonable(obj: Any) -> Any:
    """A copy of ``obj`` that ``json.dump`` accepts strictly: NaN/inf -> ``None``, NumPy scalars and arrays ->
    Python numbers and lists, tuples -> lists, paths -> strings, mapping keys -> strings."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


# ----------------------------------------------------------------------------------------------------------------
# formatting
# ----------------------------------------------------------------------------------------------------------------
def _pct(x: Any) -> str:
    if isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(float(x)):
        return f"{100.0 * float(x):.1f}"
    return DASH


def _num(x: Any) -> str:
    if isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(float(x)):
        return f"{float(x):g}"
    return DASH


def _pair(d: Mapping[str, Any] | None, a: str = "roc_auc", b: str = "pr_auc") -> str:
    if not d:
        return DASH
    return f"{_pct(d.get(a))} / {_pct(d.get(b))}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _encoder_family(model: Mapping[str, Any]) -> str:
    name = str(model.get("objective"))
    if name in OBJECTIVES and not OBJECTIVES.get(name).text_tower:
        return "binary"
    name = str(model.get("text_encoder") or "").lower()
    if "glove" in name or name.endswith(".txt"):
        return "glove"
    if "bert-base" in name or name == "bert":
        return "bert"
    return name


def paper_row_for(model: Mapping[str, Any]) -> tuple[str, dict[str, dict[str, float]]]:
    """The paper's Table 2 row for a model's (objective, text encoder, text representation), else the paper's
    best model (contrastive, BERT, stochastic); returns ``(label, numbers)``."""
    from musicsearch.eval import published

    try:
        row = published.table2_row(str(model.get("objective")), _encoder_family(model), str(model.get("text_rep")))
        note = "same model family"
    except MusicSearchError:
        row = published.table2_row("contrastive", "bert", "stochastic")
        note = "the paper's best model; no published row for this model family"
    enc = {"binary": "binary", "glove": "GloVe", "bert": "BERT"}[row.text_encoder]
    return f"*paper (published): {row.objective}, {enc}, {row.text_rep}* ({note})", row.as_dict()


def _model_label(run: Mapping[str, Any]) -> str:
    return str(run.get("model", {}).get("name", "model"))


def _retrieval_rows(runs: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    rows: list[list[str]] = []
    paper_rows: dict[str, list[str]] = {}
    for run in runs:
        for section in ("ecals", "corpus"):
            res = run.get("results", {}).get(section)
            if not res:
                continue
            tags = res.get("tags", {})
            s = res.get("sentence", {})
            medr = f"{_num(s.get('median_rank_1based'))} / {_num(s.get('median_rank_0based'))}"
            rows.append([
                _model_label(run), str(res.get("dataset", section)), str(res.get("n_tracks", DASH)),
                _pair(tags.get("top50")), _pair(tags.get("all")), _pct(s.get("R@1")), _pct(s.get("R@5")),
                _pct(s.get("R@10")), _pct(s.get("mAP@10")), medr,
            ])  # fmt: skip
            if section == "ecals":
                label, p = paper_row_for(run.get("model", {}))
                ps = p["sentence"]
                paper_rows[label] = [
                    label, "ECALS test", "34,631", _pair(p["tag50"]), _pair(p["tag1054"]), _pct(ps["R@1"]),
                    _pct(ps["R@5"]), _pct(ps["R@10"]), _pct(ps["mAP@10"]),
                    f"{_num(ps['median_rank_1based'])} / {_num(ps['median_rank_0based'])}",
                ]  # fmt: skip
    return rows + list(paper_rows.values())


def _unseen_rows(runs: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    rows = []
    for run in runs:
        for section in ("corpus", "ecals"):
            u = run.get("results", {}).get(section, {}).get("unseen")
            if not u:
                continue
            if "skipped" in u:
                rows.append([_model_label(run), section, DASH, DASH, DASH, str(u["skipped"])])
                continue
            rows.append([
                _model_label(run), str(run["results"][section].get("dataset", section)), _pair(u),
                _pair(u.get("seen_tags")), f"{u.get('n_labels_scored_roc', 0)} of {u.get('n_labels', 0)}",
                str(u.get("source", "")),
            ])  # fmt: skip
    return rows


def _transfer_cell(res: Mapping[str, Any] | None, metric: str, balanced: bool = False) -> str:
    if not res:
        return DASH
    if metric == "accuracy":
        bal = res.get("balanced_accuracy") if balanced else None
        return _pct(res.get("accuracy")) + (f" (bal. {_pct(bal)})" if bal is not None else "")
    if metric == "f1":
        return _pct(res.get("f1"))
    return _pair(res)


def _transfer_table(runs: Sequence[Mapping[str, Any]], section: str, paper: Mapping[str, Mapping[str, float]],
                    paper_label: str, balanced: bool = False) -> list[str]:  # fmt: skip
    datasets: dict[str, str] = {}
    for run in runs:
        for name, res in run.get("results", {}).get(section, {}).items():
            datasets.setdefault(name, str(res.get("metric", "roc_auc")))
    if not datasets:
        return []
    unit = {"accuracy": "acc", "f1": "F1", "roc_auc": "ROC / PR"}
    header = ["model", *[f"{name} ({unit.get(m, m)})" for name, m in datasets.items()]]
    rows = []
    for run in runs:
        got = run.get("results", {}).get(section, {})
        rows.append([_model_label(run), *[_transfer_cell(got.get(n), m, balanced) for n, m in datasets.items()]])
    if any(n in paper for n in datasets):
        rows.append([paper_label, *[_transfer_cell(paper.get(n), m) if n in paper else DASH
                                    for n, m in datasets.items()]])  # fmt: skip
    return _table(header, rows)


def markdown_report(runs: Sequence[Mapping[str, Any]]) -> str:
    """The Markdown tables of one or more :func:`~musicsearch.eval.suites.run_suite` results (one row each).

    Args:
        runs: suite results (one per model).

    Returns:
        Markdown text: retrieval (Table 2 layout), unseen queries, zero-shot and probing (Table 4 layout), and
        notes on the conventions.
    """
    from musicsearch.eval import published

    lines = ["# Evaluation report", ""]
    models = ", ".join(f"`{_model_label(r)}` ({r.get('model', {}).get('objective', '?')})" for r in runs)
    lines += [f"Models: {models}. Numbers in percent; the JSON beside this file holds every number as a fraction.", ""]
    retrieval = _retrieval_rows(runs)
    if retrieval:
        header = ["model", "dataset", "tracks", "50-tag ROC / PR", "all-tag ROC / PR", "R@1", "R@5", "R@10",
                  "mAP@10", "MedR (1-based / 0-based)"]  # fmt: skip
        lines += ["## Retrieval (layout of the paper's Table 2)", "", *_table(header, retrieval), ""]
        lines += [
            "Tag columns: on ECALS the 50-tag list and all 1,054 tags; on a corpus its 50 most frequent tags and its "
            "whole vocabulary (tags without a positive among the evaluated tracks are skipped and counted in the "
            "JSON). Sentence retrieval: each caption ranks the tracks of its pairs (1,000 on ECALS). MedR: median "
            "rank of the relevant track counted from 1 / from 0 (the paper's Table 2 counts from 0). "
            "Classification models rank captions by word overlap with their predicted tags (tie rule in the JSON).",
            "",
        ]
    unseen = _unseen_rows(runs)
    if unseen:
        header = ["model", "dataset", "unseen queries ROC / PR", "their tags ROC / PR", "queries scored", "source"]
        lines += ["## Unseen queries", "", *_table(header, unseen), ""]
    paper_label = "*paper (published): contrastive, BERT, stochastic*"
    zs = _transfer_table(runs, "zeroshot", published.ZERO_SHOT, paper_label, balanced=True)
    if zs:
        lines += ["## Zero-shot transfer (layout of the paper's Table 4)", "", *zs, ""]
        splits = sorted({f"{name}: {res.get('split')} ({res.get('n_tracks')} tracks)" for r in runs
                         for name, res in r.get("results", {}).get("zeroshot", {}).items()})  # fmt: skip
        lines += [
            "Label names embedded as text, cosine with the track embedding; accuracy (single-label; in brackets the "
            "balanced accuracy, the mean of the classes' recalls, where answering one class for every track scores "
            "100 / classes), macro ROC / PR "
            "(multi-label), F1 at per-label best thresholds tuned on the scored tracks (KVT, the paper's "
            "convention). Scored tracks: " + "; ".join(splits) + " (by default the test split, every track for "
            "Emotify; `--zeroshot-split` chooses).",
            "",
        ]
    pr = _transfer_table(runs, "probe", published.MLP_PROBING, paper_label + " MLP probe")
    if pr:
        heads = sorted({str(res.get("head")) for r in runs for res in r.get("results", {}).get("probe", {}).values()})
        lines += [f"## Probing ({', '.join(heads)} head; layout of the paper's Table 4)", "", *pr, ""]
        n_seeds = sorted({len(res.get("seeds", [0])) for r in runs
                          for res in r.get("results", {}).get("probe", {}).values()})  # fmt: skip
        seeds = (f" Each score is the mean over {'/'.join(map(str, n_seeds))} probing seeds (each seed draws the "
                 "head's initialisation and batches; the JSON has every seed's score and the standard deviation)."
                 if n_seeds != [1] else "")  # fmt: skip
        lines += [
            "Frozen track embeddings; the configuration with the best validation score is scored once on test." + seeds,
            "",
        ]
    if len(lines) <= 4:
        lines += ["(no results)", ""]
    return "\n".join(lines)


def write_report(runs: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``report.json`` (every number) and ``report.md`` (the tables) into ``out_dir``, atomically.

    Args:
        runs: suite results, one per model.
        out_dir: the report folder (created).

    Returns:
        The paths of ``report.json`` and ``report.md``.
    """
    if not runs:
        raise MusicSearchError("no results to report")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "report.json", out / "report.md"
    write_json(json_path, to_jsonable({"format": REPORT_FILE_FORMAT, "runs": list(runs)}))
    with atomic_write(md_path) as fh:
        fh.write(markdown_report(runs))
    return json_path, md_path
