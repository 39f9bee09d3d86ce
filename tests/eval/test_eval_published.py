"""The paper's numbers as data agree with the release's result files; the reader normalises every format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from musicsearch.errors import MusicSearchError
from musicsearch.eval import published as P

# Cells where the printed table (paper and release README alike) differs from the release's own result files
# by more than rounding: (variant, file kind, metric) -> (printed, file value rounded to 4 places).
KNOWN_MISMATCHES = {
    ("triplet_bert_caption", "50", "pr_auc"): (0.350, 0.3479),
    ("triplet_bert_stochastic", "50", "pr_auc"): (0.350, 0.3468),
    ("triplet_bert_stochastic", "1054", "roc_auc"): (0.836, 0.8353),
}


def test_table2_agrees_with_the_release_files_to_the_printed_digit() -> None:
    assert len(P.TABLE2) == 10 and sorted(r.variant for r in P.TABLE2) == P.release_variants()
    mismatches = {}
    for row in P.TABLE2:
        paper = row.as_dict()
        for kind, key in (("50", "tag50"), ("1054", "tag1054")):
            rel = P.release_results(row.variant, kind)
            for m in ("roc_auc", "pr_auc"):
                if abs(rel[m] - paper[key][m]) > 0.0005 + 1e-9:
                    mismatches[(row.variant, kind, m)] = (paper[key][m], round(rel[m], 4))
        mq = P.release_results(row.variant, "mq")
        for m in ("R@1", "R@5", "R@10", "mAP@10"):
            if abs(mq[m] - paper["sentence"][m]) > 0.0005 + 1e-9:
                mismatches[(row.variant, "mq", m)] = (paper["sentence"][m], round(mq[m], 4))
        assert mq["median_rank_0based"] == row.median_rank_0based
        assert paper["sentence"]["median_rank_1based"] == row.median_rank_0based + 1
    assert set(mismatches) == set(KNOWN_MISMATCHES)
    for key, (printed, from_file) in KNOWN_MISMATCHES.items():
        assert mismatches[key] == (pytest.approx(printed), pytest.approx(from_file))


def test_release_tag_files_list_the_shipped_vocabularies_in_order() -> None:
    rel50 = P.release_results("contrastive_bert_stochastic", "50")
    rel1054 = P.release_results("contrastive_bert_stochastic", "1054")
    assert list(rel50["per_label"]) == P.ecals_tags(50) and rel50["n_labels"] == 50
    assert list(rel1054["per_label"]) == P.ecals_tags(1054) and len(set(P.ecals_tags(1054))) == 1054


def test_lookup_and_compare() -> None:
    row = P.table2_row("contrastive", "bert", "caption")
    assert row.text_rep == "sentence" and row.variant == "contrastive_bert_caption"
    with pytest.raises(MusicSearchError, match="rows:"):
        P.table2_row("contrastive", "glove", "tag")
    cmp = P.compare({"accuracy": 0.9, "n_tracks": 290, "note": "x"}, P.ZERO_SHOT["gtzan"])
    assert cmp == {"accuracy": {"ours": 0.9, "paper": 0.879, "delta": pytest.approx(0.021)}}
    assert set(P.MLP_PROBING) <= set(P.ZERO_SHOT)


def test_reader_formats_and_errors(tmp_path: Path) -> None:
    transfer = {"macro_roc": 0.75, "macro_pr": 0.76, "macro_fl": 0.7531, "tag_wise": {"male": {"roc_auc": 1.0,
                "pr_auc": 1.0}}}  # fmt: skip
    (tmp_path / "results.json").write_text(json.dumps(transfer))
    out = P.read_release_results(tmp_path / "results.json")
    assert out["kind"] == "transfer" and out["f1"] == 0.7531 and out["per_label"]["male"]["roc_auc"] == 1.0
    assert P.parse_release_results({"acc": 0.89}) == {"kind": "transfer", "accuracy": 0.89}
    (tmp_path / "bad.json").write_text('{"loss": 1}')
    with pytest.raises(MusicSearchError, match="not a result file"):
        P.read_release_results(tmp_path / "bad.json")
    with pytest.raises(MusicSearchError, match="does not exist"):
        P.read_release_results(tmp_path / "none.json")
    with pytest.raises(MusicSearchError, match="known: classification_binary_tag"):
        P.release_results("contrastive_glove_tag", "mq")
