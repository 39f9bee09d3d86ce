"""The paper's published numbers, as data, and a reader for its release's result files.

Everything is a fraction in [0, 1] (the paper prints percent) except median ranks, which are given counted
from 0 (the release's convention, ``median_rank_0based``) and from 1 (``median_rank_1based``); keys match those
of :mod:`musicsearch.eval.metrics` so our numbers and the paper's can be put side by side (:func:`compare`).

Sources: Table 2 and the zero-shot / probing figures of Doh et al., ICASSP 2023 (as transcribed in
``shared/docs/paper.md`` section 10), and the release's per-variant result files shipped in
``musicsearch/eval/assets/ecals/published_results/``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from musicsearch.data.sources.labels import asset_path
from musicsearch.errors import MusicSearchError

PAPER_MODEL = "contrastive_bert_stochastic"
"""The variant whose zero-shot and probing numbers the paper reports."""


@dataclass(frozen=True)
class PublishedRetrieval:
    """One row of the paper's Table 2 (ECALS test): tag retrieval on 50 and 1,054 tags, sentence retrieval.

    ``text_rep`` uses the paper's words (``tag``, ``sentence``, ``stochastic``); the release calls "sentence"
    ``caption`` in its file names (see :attr:`variant`).
    """

    objective: str
    text_encoder: str
    text_rep: str
    tag50_roc_auc: float
    tag50_pr_auc: float
    tag1054_roc_auc: float
    tag1054_pr_auc: float
    r1: float
    r5: float
    r10: float
    map10: float
    median_rank_0based: float

    @property
    def variant(self) -> str:
        """The release's name of this model, e.g. ``contrastive_bert_stochastic`` / ``triplet_glove_caption``."""
        rep = "caption" if self.text_rep == "sentence" else self.text_rep
        return f"{self.objective}_{self.text_encoder}_{rep}"

    def as_dict(self) -> dict[str, dict[str, float]]:
        """``{"tag50": {"roc_auc", "pr_auc"}, "tag1054": {...}, "sentence": {"R@1", "R@5", "R@10", "mAP@10",
        "median_rank_0based", "median_rank_1based"}}``."""
        return {
            "tag50": {"roc_auc": self.tag50_roc_auc, "pr_auc": self.tag50_pr_auc},
            "tag1054": {"roc_auc": self.tag1054_roc_auc, "pr_auc": self.tag1054_pr_auc},
            "sentence": {
                "R@1": self.r1,
                "R@5": self.r5,
                "R@10": self.r10,
                "mAP@10": self.map10,
                "median_rank_0based": self.median_rank_0based,
                "median_rank_1based": self.median_rank_0based + 1.0,
            },
        }


def _row(obj: str, enc: str, rep: str, t50: tuple[float, float], t1054: tuple[float, float],
         r: tuple[float, float, float, float], medr0: float) -> PublishedRetrieval:  # fmt: skip
    return PublishedRetrieval(
        obj, enc, rep, t50[0] / 100, t50[1] / 100, t1054[0] / 100, t1054[1] / 100,
        r[0] / 100, r[1] / 100, r[2] / 100, r[3] / 100, median_rank_0based=float(medr0),
    )  # fmt: skip


TABLE2: tuple[PublishedRetrieval, ...] = (
    _row("classification", "binary", "tag", (90.2, 39.5), (86.4, 8.8), (4.0, 13.8, 20.1, 8.3), 86),
    _row("triplet", "glove", "tag", (89.2, 36.0), (82.6, 6.1), (2.8, 11.2, 18.6, 6.6), 51.5),
    _row("triplet", "glove", "sentence", (88.6, 37.1), (76.8, 5.3), (5.4, 22.1, 35.0, 13.0), 17),
    _row("triplet", "glove", "stochastic", (89.2, 37.6), (81.6, 6.2), (6.4, 21.8, 32.7, 12.8), 19.5),
    _row("triplet", "bert", "tag", (86.9, 30.2), (81.7, 5.1), (1.6, 6.2, 12.0, 3.9), 68),
    _row("triplet", "bert", "sentence", (87.7, 35.0), (78.8, 5.4), (6.7, 23.6, 36.6, 14.1), 16),
    _row("triplet", "bert", "stochastic", (88.4, 35.0), (83.6, 6.3), (6.6, 25.1, 39.4, 14.6), 16),
    _row("contrastive", "bert", "tag", (90.6, 40.2), (86.4, 8.8), (2.5, 13.7, 22.5, 7.4), 47),
    _row("contrastive", "bert", "sentence", (87.0, 32.5), (77.6, 5.1), (6.8, 25.4, 38.4, 15.3), 17),
    _row("contrastive", "bert", "stochastic", (89.8, 38.0), (84.8, 7.7), (10.2, 29.8, 42.8, 18.7), 13),
)
"""The paper's Table 2 (ECALS test), fractions; median rank counted from 0 as the release does.

Three printed cells differ from the release's own result files by more than rounding (the release README prints
the same table): triplet/BERT/sentence 50-tag PR 35.0 (file 34.79), triplet/BERT/stochastic 50-tag PR 35.0
(file 34.68) and 1,054-tag ROC 83.6 (file 83.53). Use :func:`release_results` for the file values."""

ZERO_SHOT: dict[str, dict[str, float]] = {
    "gtzan": {"accuracy": 0.879},
    "fma-small": {"accuracy": 0.451},
    "emotify": {"accuracy": 0.3375},
    "mtat": {"roc_auc": 0.784, "pr_auc": 0.212},
    "mtg-top50": {"roc_auc": 0.761, "pr_auc": 0.236},
    "mtg-genre": {"roc_auc": 0.812, "pr_auc": 0.156},
    "mtg-instrument": {"roc_auc": 0.606, "pr_auc": 0.113},
    "mtg-moodtheme": {"roc_auc": 0.657, "pr_auc": 0.081},
    "kvt": {"f1": 0.7035},
}
"""Zero-shot transfer of :data:`PAPER_MODEL`, keyed by our dataset registry names (KVT: F1 at per-label
best thresholds tuned on the test data itself)."""

MLP_PROBING: dict[str, dict[str, float]] = {
    "mtat": {"roc_auc": 0.911, "pr_auc": 0.384},
    "gtzan": {"accuracy": 0.890},
    "fma-small": {"accuracy": 0.600},
    "emotify": {"accuracy": 0.4875},
    "kvt": {"f1": 0.7531},
}
"""MLP probing of :data:`PAPER_MODEL`, keyed by our dataset registry names."""


def table2_row(objective: str, text_encoder: str, text_rep: str) -> PublishedRetrieval:
    """The Table 2 row of one model (``text_rep`` may be given as ``sentence`` or ``caption``).

    Raises:
        MusicSearchError: if the paper has no such row (the message lists the rows).
    """
    rep = "sentence" if text_rep == "caption" else text_rep
    for row in TABLE2:
        if (row.objective, row.text_encoder, row.text_rep) == (objective, text_encoder, rep):
            return row
    known = ", ".join(r.variant for r in TABLE2)
    raise MusicSearchError(f"the paper has no row {objective}/{text_encoder}/{text_rep}; rows: {known}")


# ----------------------------------------------------------------------------------------------------------------
# the release's result files
# ----------------------------------------------------------------------------------------------------------------
_TRANSFER_KEYS = {"macro_roc": "roc_auc", "macro_pr": "pr_auc", "macro_fl": "f1", "acc": "accuracy"}


def parse_release_results(obj: Mapping[str, Any], *, source: str = "results") -> dict[str, Any]:
    """Normalise one of the release's result objects to our metric keys.

    Recognised formats:

    * tag retrieval (``<n>_results.json``): ``{"roc_auc", "pr_auc", "tag_wise": {tag: {"roc_auc", "pr_auc"}}}``
      -> ``{"kind": "tags", "roc_auc", "pr_auc", "n_labels", "per_label": {...}}``;
    * sentence retrieval (``mq_results.json``): ``{"R@1", "R@5", "R@10", "mAP@10", "medRank", ...}`` (medRank
      counted from 0) -> ``{"kind": "sentence", "R@1", ..., "median_rank_0based", "median_rank_1based"}``;
    * transfer (``results.json`` of zero-shot / probing): ``{"macro_roc", "macro_pr", "macro_fl", "tag_wise"}``
      or ``{"acc"}`` -> ``{"kind": "transfer", "roc_auc", "pr_auc", "f1" | "accuracy"[, "per_label"]}``.

    Raises:
        MusicSearchError: for any other content.
    """
    if "R@1" in obj and "medRank" in obj:
        out: dict[str, Any] = {"kind": "sentence"}
        for k in ("R@1", "R@5", "R@10", "mAP@10"):
            out[k] = float(obj[k])
        out["median_rank_0based"] = float(obj["medRank"])
        out["median_rank_1based"] = float(obj["medRank"]) + 1.0
        return out
    if any(k in obj for k in _TRANSFER_KEYS):
        out = {"kind": "transfer"}
        out.update({ours: float(obj[theirs]) for theirs, ours in _TRANSFER_KEYS.items() if theirs in obj})
    elif "roc_auc" in obj and "pr_auc" in obj:
        out = {"kind": "tags", "roc_auc": float(obj["roc_auc"]), "pr_auc": float(obj["pr_auc"])}
    else:
        raise MusicSearchError(
            f"{source}: not a result file of the paper's release (expected roc_auc/pr_auc/tag_wise, "
            "R@1/.../medRank, or macro_roc/macro_pr/macro_fl/acc)"
        )
    tag_wise = obj.get("tag_wise")
    if isinstance(tag_wise, Mapping):
        out["n_labels"] = len(tag_wise)
        out["per_label"] = {
            str(tag): {"roc_auc": float(v["roc_auc"]), "pr_auc": float(v["pr_auc"])} for tag, v in tag_wise.items()
        }
    return out


def read_release_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and normalise one result JSON file of the release (see :func:`parse_release_results`).

    Raises:
        MusicSearchError: if the file is missing, not JSON, or not a release result file.
    """
    p = Path(path)
    if not p.is_file():
        raise MusicSearchError(f"release result file {p} does not exist")
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MusicSearchError(f"{p} is not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise MusicSearchError(f"{p}: expected a JSON object")
    return parse_release_results(obj, source=str(p))


def release_variants() -> list[str]:
    """The variants whose result files are shipped (e.g. ``contrastive_bert_stochastic``), sorted."""
    folder = asset_path("ecals", "published_results")
    return sorted({f.name.rsplit("_", 2)[0] for f in folder.glob("*_results.json")})


def release_results(variant: str, kind: str) -> dict[str, Any]:
    """The shipped release result of one variant: ``kind`` ``"50"`` / ``"1054"`` (tag retrieval) or ``"mq"``
    (sentence retrieval), normalised by :func:`parse_release_results`.

    Raises:
        MusicSearchError: for an unknown variant or kind (the message lists the known ones).
    """
    if kind not in ("50", "1054", "mq"):
        raise MusicSearchError(f"unknown result kind {kind!r}; use '50', '1054' or 'mq'")
    path = asset_path("ecals", "published_results", f"{variant}_{kind}_results.json")
    if not path.is_file():
        raise MusicSearchError(f"no shipped results for variant {variant!r}; known: {', '.join(release_variants())}")
    return read_release_results(path)


def ecals_tags(n: int) -> list[str]:
    """The ECALS tag list: ``n=50`` (the "50 Tags" of Table 2) or ``n=1054`` (release result-file order)."""
    names = {50: "cals_tags_50.json", 1054: "ecals_tags_1054.json"}
    if n not in names:
        raise MusicSearchError(f"ECALS tag lists exist for 50 and 1054 tags, not {n}")
    tags = json.loads(asset_path("ecals", names[n]).read_text(encoding="utf-8"))
    return [str(t) for t in tags]


def compare(ours: Mapping[str, Any], paper: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Side-by-side numbers for the keys both dicts hold as numbers: ``{key: {"ours", "paper", "delta"}}``.

    ``delta = ours - paper``; keys present in only one dict, and non-numeric values, are left out.
    """
    out: dict[str, dict[str, float]] = {}
    for key, theirs in paper.items():
        mine = ours.get(key)
        if isinstance(mine, int | float) and isinstance(theirs, int | float) and not isinstance(mine, bool):
            out[key] = {"ours": float(mine), "paper": float(theirs), "delta": float(mine) - float(theirs)}
    return out
