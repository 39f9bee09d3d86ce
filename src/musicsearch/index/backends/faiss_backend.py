"""FAISS backend, the embedded default: exact below a size threshold, IVF-Flat above it.

* Below ``exact_threshold`` vectors (default 50 000) the store is an ``IndexIDMap2(IndexFlatIP)``: exact, no
  training, any add or remove is immediate. At 50k 128-d vectors a query costs well under 10 ms on 2 cores.
* When an ``add`` brings the store to the threshold it switches, by itself, to ``IndexIVFFlat`` (inner product,
  ``nlist ≈ 4·sqrt(N)`` k-means cells trained on the stored vectors, seeded) searched with ``nprobe`` cells. IVF
  was chosen over HNSW on measurements (docs/vector-store.md): it builds several times faster, supports removal
  natively (HNSW in FAISS cannot remove), and reached recall@10 ≥ 0.99 at sub-millisecond latency on clustered
  data. The cells are retrained when the store grows ``retrain_growth``-fold (default 4) past its last training,
  and the store returns to exact search when removals bring it below half the threshold.
* Filters (``allowed_ids``) run inside FAISS through an ``IDSelector`` (a bitmap over ids when they are dense,
  else a hash set). IVF widens ``nprobe`` in inverse proportion to the allowed fraction (a filter keeping 1 % of
  the store scans 100x as many cells, up to all of them, which is exact), so restrictive filters keep their recall.
* ``nprobe`` is tuned on the store's own data at every IVF (re)training: :func:`tune_nprobe` measures recall@10
  against exact search over a ladder of ``nprobe`` values (:func:`nprobe_ladder`) for a fixed, seeded query sample
  (stored vectors, i.e. queries by example, plus the real text queries a caller gives through
  :meth:`FaissBackend.set_tuning_queries`) and keeps the smallest that reaches ``target_recall`` (default 0.98)
  on every query group. The choice and its measured recall are saved with the index (:class:`NprobeTuning`) and
  used when the store is reopened; an index saved without one (before tuning existed), a backend given
  ``target_recall=None``, or one trained without real queries (stored vectors alone are easy queries: on real
  embeddings they reach 0.998 at ``nprobe`` 4 of 4000 where text queries reach 0.77) scans
  :func:`default_nprobe` cells, and an explicit ``nprobe`` always wins.
* Stored flat (float32, no compression): 4·D bytes a vector plus 8 for its id.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from musicsearch.errors import MusicSearchError
from musicsearch.index.backends.base import BACKENDS, VectorBackend, l2_normalize, sort_hits

log = logging.getLogger(__name__)

DEFAULT_EXACT_THRESHOLD = 50_000
_BITMAP_MAX_BYTES = 1 << 25  # a bitmap filter up to 32 MiB (ids < 2**28); beyond, a hash set of the allowed ids
#: An IVF index's id -> (list, offset) map kept in a hash table (built by ``get``; the stubs lack ``DirectMap``).
_ID_HASHTABLE: int = faiss.DirectMap.Hashtable  # type: ignore[attr-defined]
_TIE_MARGIN = 16  # extra candidates fetched so that equal scores at the cut-off can be ordered by the tie rule
#: Recall@:data:`TUNE_K` that the tuned ``nprobe`` must reach on every query group, unless a backend says otherwise.
DEFAULT_TARGET_RECALL = 0.98
#: Hits per query whose recall the tuning measures (the result page of a search).
TUNE_K = 10
#: Stored vectors used as queries by example when tuning, and most caller-given queries used.
TUNE_EXAMPLES = 256
TUNE_MAX_QUERIES = 1024
#: A hit counts towards recall when its score reaches the k-th exact score less this: two float32 inner products
#: of the same unit vectors, summed in different orders, differ by a few ulps of the D terms (D·2^-24 ≈ 8e-6 at
#: D = 128), so scores within it are ties, whichever of them a search returns.
RECALL_SCORE_TOLERANCE = 1e-5


def default_nlist(n: int) -> int:
    """IVF cell count for ``n`` training vectors: about ``4·sqrt(n)``, at least 39 vectors a cell (FAISS's
    minimum for k-means), between 1 and 65 536."""
    return int(max(1, min(65_536, round(4 * math.sqrt(n)), n // 39)))


def default_nprobe(nlist: int) -> int:
    """Cells scanned per query: ``nlist / 32`` (about 3 % of the store) clamped to [16, 256] and to ``nlist``."""
    return int(min(nlist, max(16, min(256, nlist // 32))))


def nprobe_ladder(nlist: int) -> list[int]:
    """The ``nprobe`` values tuning tries, ascending: 1, 2, 3, 4, 6, 8, 12, 16, ... (powers of two and 1.5 times
    them) below ``nlist``, then ``nlist`` itself (every cell: exact search).

    Raises:
        MusicSearchError: ``nlist`` < 1.
    """
    if nlist < 1:
        raise MusicSearchError(f"nlist must be >= 1, got {nlist}")
    out: list[int] = []
    p = 1
    while p < nlist:
        out.append(p)
        if p >= 2 and p + p // 2 < nlist:
            out.append(p + p // 2)
        p *= 2
    return [*out, int(nlist)]


def recall_at_k(scores: np.ndarray, exact_kth: np.ndarray, *, tolerance: float = RECALL_SCORE_TOLERANCE) -> float:
    """Recall@k of approximate results, judged by score: the mean over queries of the share of the ``k`` returned
    hits whose score reaches the query's ``k``-th exact score (less ``tolerance``).

    On a search that computes true inner products (IVF-Flat does), this equals ``|returned ∩ exact top k| / k``
    except at ties at the cut-off, where any of the tied items is a correct answer (so no tie rule can lower it).

    Args:
        scores: ``(Q, k)`` returned scores, padding ``-inf`` (never a hit).
        exact_kth: ``(Q,)`` the ``k``-th best exact score of each query.
        tolerance: scores this close below the ``k``-th count as ties (:data:`RECALL_SCORE_TOLERANCE`).

    Returns:
        Recall in ``[0, 1]``; 1.0 for no queries.
    """
    s = np.asarray(scores, np.float64)
    if s.shape[0] == 0:
        return 1.0
    kth = np.asarray(exact_kth, np.float64).reshape(-1, 1)  # (Q, 1)
    return float(np.mean(s >= kth - tolerance))


@dataclass(frozen=True)
class NprobeTuning:
    """The outcome of :func:`tune_nprobe`, saved with the index.

    Attributes:
        nprobe: cells to scan per query.
        recall: query group -> its measured recall@``k`` at ``nprobe`` against exact search.
        target: the recall every group had to reach.
        k: hits per query the recall counts.
        queries: query group -> how many queries it had.
        sweep: ``(nprobe, {group: recall})`` for every ladder value tried, ascending.
    """

    nprobe: int
    recall: dict[str, float]
    target: float
    k: int
    queries: dict[str, int]
    sweep: tuple[tuple[int, dict[str, float]], ...] = ()

    @property
    def min_recall(self) -> float:
        """The lowest group recall at :attr:`nprobe` (1.0 with no groups)."""
        return min(self.recall.values(), default=1.0)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready fields (the index manifest's ``tuning``)."""
        return {
            "nprobe": self.nprobe,
            "recall": self.recall,
            "target": self.target,
            "k": self.k,
            "queries": self.queries,
            "sweep": [[p, r] for p, r in self.sweep],
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> NprobeTuning:
        """Inverse of :meth:`to_json`."""
        return cls(
            nprobe=int(obj["nprobe"]),
            recall={str(g): float(r) for g, r in dict(obj["recall"]).items()},
            target=float(obj["target"]),
            k=int(obj["k"]),
            queries={str(g): int(n) for g, n in dict(obj.get("queries", {})).items()},
            sweep=tuple((int(p), {str(g): float(x) for g, x in dict(r).items()}) for p, r in obj.get("sweep", [])),
        )


def tune_nprobe(
    search: Callable[[np.ndarray, int], np.ndarray],
    queries: Mapping[str, np.ndarray],
    exact_kth: Mapping[str, np.ndarray],
    *,
    nlist: int,
    target: float = DEFAULT_TARGET_RECALL,
    k: int = TUNE_K,
) -> NprobeTuning:
    """The smallest ``nprobe`` of :func:`nprobe_ladder` whose measured recall@``k`` reaches ``target`` on every
    query group (``nlist``, exact search, when none below it does).

    Recall is :func:`recall_at_k` of ``search`` against the exact ``k``-th scores. The ladder is walked upwards
    and stops at the first value that reaches the target.

    Args:
        search: ``search(queries (Q, D), nprobe) -> scores (Q, k)`` of the approximate index at that ``nprobe``.
        queries: group name (e.g. ``"text"``, ``"example"``) -> ``(Q, D)`` float32 unit queries; empty groups are
            skipped.
        exact_kth: group name -> ``(Q,)`` the ``k``-th best exact score of each of its queries.
        nlist: cells of the index (the ladder's top).
        target: recall each group must reach, in ``(0, 1]``.
        k: hits per query.

    Returns:
        The chosen ``nprobe``, each group's recall there, and the sweep.

    Raises:
        MusicSearchError: ``target`` outside ``(0, 1]``, ``k`` < 1, or a group without its exact scores.
    """
    if not 0 < target <= 1:
        raise MusicSearchError(f"target recall must be in (0, 1], got {target}")
    if k < 1:
        raise MusicSearchError(f"k must be >= 1, got {k}")
    groups = {g: q for g, q in queries.items() if len(q)}
    missing = [g for g in groups if g not in exact_kth]
    if missing:
        raise MusicSearchError(f"no exact scores for query group(s) {missing}; give exact_kth for every group")
    sweep: list[tuple[int, dict[str, float]]] = []
    for nprobe in nprobe_ladder(nlist):
        recall = {g: recall_at_k(search(q, nprobe), exact_kth[g]) for g, q in groups.items()}
        sweep.append((nprobe, recall))
        if min(recall.values(), default=1.0) >= target or nprobe >= nlist:
            break
    nprobe, recall = sweep[-1]
    return NprobeTuning(nprobe, recall, float(target), int(k), {g: len(q) for g, q in groups.items()}, tuple(sweep))


def _selector(allowed: np.ndarray) -> tuple[faiss.IDSelector, np.ndarray]:
    """A FAISS selector accepting exactly ``allowed`` (sorted, unique, >= 0) and the array it points into.

    The array must stay alive while the selector is used.
    """
    top = int(allowed[-1])
    if top // 8 + 1 <= _BITMAP_MAX_BYTES:
        mask = np.zeros(top + 1, dtype=bool)
        mask[allowed] = True
        bitmap = np.packbits(mask, bitorder="little")  # bit i of byte i // 8 is id i
        return faiss.IDSelectorBitmap(bitmap.size, faiss.swig_ptr(bitmap)), bitmap
    arr = np.ascontiguousarray(allowed, dtype=np.int64)
    return faiss.IDSelectorBatch(arr.size, faiss.swig_ptr(arr)), arr


def _saved_target(manifest: Mapping[str, Any]) -> float | None:
    """The ``target_recall`` of a saved index: as saved (``None``: tuning off), or the default for an index saved
    before tuning existed (it scans :func:`default_nprobe` cells until its next training, which tunes)."""
    if "target_recall" not in manifest:
        return DEFAULT_TARGET_RECALL
    value = manifest["target_recall"]
    return None if value is None else float(value)


@BACKENDS.register("faiss")
class FaissBackend(VectorBackend):
    """Embedded FAISS store (exact below ``exact_threshold``, IVF-Flat above), persisted as one index file.

    Args:
        dim: vector dimension.
        exact_threshold: size at which the store switches from exact to IVF search (default 50 000).
        nlist: IVF cells; ``None`` picks :func:`default_nlist` of the size at each (re)training.
        nprobe: IVF cells scanned per query; ``None`` picks :func:`default_nprobe`.
        retrain_growth: retrain the IVF cells when the store grows this many times past its last training.
        seed: k-means seed, so that the same vectors always give the same index (and the same tuning sample).
        target_recall: recall@10 the tuned ``nprobe`` must reach at each IVF training (:func:`tune_nprobe`);
            ``None``: no tuning, :func:`default_nprobe`. Ignored when ``nprobe`` is given.
    """

    name = "faiss"

    def __init__(
        self,
        dim: int,
        *,
        exact_threshold: int = DEFAULT_EXACT_THRESHOLD,
        nlist: int | None = None,
        nprobe: int | None = None,
        retrain_growth: float = 4.0,
        seed: int = 0,
        target_recall: float | None = DEFAULT_TARGET_RECALL,
    ) -> None:
        super().__init__(dim)
        if exact_threshold < 1:
            raise MusicSearchError(f"exact_threshold must be >= 1, got {exact_threshold}")
        if nlist is not None and nlist < 1:
            raise MusicSearchError(f"nlist must be >= 1, got {nlist}")
        if nprobe is not None and nprobe < 1:
            raise MusicSearchError(f"nprobe must be >= 1, got {nprobe}")
        if retrain_growth <= 1:
            raise MusicSearchError(f"retrain_growth must be > 1, got {retrain_growth}")
        if target_recall is not None and not 0 < target_recall <= 1:
            raise MusicSearchError(f"target_recall must be in (0, 1] (or None: no tuning), got {target_recall}")
        self.exact_threshold = int(exact_threshold)
        self.nlist = nlist
        self.nprobe = nprobe
        self.retrain_growth = float(retrain_growth)
        self.seed = int(seed)
        self.target_recall = None if target_recall is None else float(target_recall)
        self._tuning: NprobeTuning | None = None  # the nprobe measured at the last IVF training
        self._tuning_queries: Callable[[], np.ndarray] | None = None
        self._trained_n = 0  # store size at the last IVF training (0 while exact)
        self._index: Any = self._new_flat()  # IndexIDMap2 (exact) or IndexIVFFlat (faiss is untyped)

    # -- state ---------------------------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        """``"exact"`` (flat) or ``"ivf"`` (approximate)."""
        return "ivf" if isinstance(self._index, faiss.IndexIVF) else "exact"

    @property
    def exact(self) -> bool:  # type: ignore[override]
        """True while the store searches exactly (below the threshold)."""
        return self.mode == "exact"

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def _new_flat(self) -> Any:
        return faiss.index_factory(self.dim, "IDMap2,Flat", faiss.METRIC_INNER_PRODUCT)

    @property
    def tuning(self) -> NprobeTuning | None:
        """The ``nprobe`` tuned at the last IVF training with its measured recall, or ``None`` (exact mode, an
        explicit ``nprobe``, tuning off, or an index saved before tuning existed)."""
        return self._tuning if self.mode == "ivf" else None

    @property
    def effective_nprobe(self) -> int | None:
        """Cells an unfiltered query scans: the explicit ``nprobe``, else the tuned one, else
        :func:`default_nprobe`; ``None`` while the store searches exactly."""
        if self.mode != "ivf":
            return None
        return self._effective_nprobe(faiss.downcast_index(self._index))

    def index_info(self) -> dict[str, Any]:
        """``{"mode": "exact"}``, or for IVF: ``mode``, ``nlist``, the ``nprobe`` searched and how it was chosen
        (``explicit``, ``tuned`` with its measured recall@k per query group and target, or ``nlist/32``)."""
        if self.mode != "ivf":
            return {"mode": "exact"}
        index: Any = faiss.downcast_index(self._index)
        nlist = int(index.nlist)
        info: dict[str, Any] = {"mode": "ivf", "nlist": nlist, "nprobe": self.effective_nprobe}
        if self.nprobe is not None:
            info["nprobe_from"] = "explicit"
        elif self._tuning is not None:
            t = self._tuning
            info |= {"nprobe_from": "tuned", "recall": t.recall, "recall_k": t.k, "target_recall": t.target}
        else:
            info["nprobe_from"] = "nlist/32"
        return info

    def set_tuning_queries(self, provider: Callable[[], np.ndarray] | None) -> None:
        """Real queries (a ``(Q, D)`` array from ``provider``, called only when an IVF training happens) that the
        ``nprobe`` tuning measures recall on, as the group ``"text"``, beside the stored vectors it always uses."""
        self._tuning_queries = provider

    def _effective_nprobe(self, index: Any) -> int:
        nlist = int(index.nlist)
        if self.nprobe is not None:
            return min(nlist, self.nprobe)
        if self._tuning is not None:
            return min(nlist, self._tuning.nprobe)
        return default_nprobe(nlist)

    def _tune(self, index: Any, vecs: np.ndarray) -> NprobeTuning | None:
        """Measure recall over the ``nprobe`` ladder on ``index`` (holding ``vecs``, ``(N, D)`` unit rows) and pick
        one (:func:`tune_nprobe`): queries are the caller's real queries and :data:`TUNE_EXAMPLES` stored vectors
        (seeded by :attr:`seed`); exact answers by brute force over ``vecs``. ``None`` (keep
        :func:`default_nprobe`) without real queries: stored vectors alone would choose too few cells for text."""
        assert self.target_recall is not None
        t0 = time.perf_counter()
        if self._tuning_queries is None:
            log.info("no real queries to tune nprobe on: IVF%d scans nlist/32 cells", int(index.nlist))
            return None
        try:
            text = np.asarray(self._tuning_queries(), np.float32)
            if text.ndim != 2 or text.shape[1] != self.dim or text.shape[0] == 0:
                raise MusicSearchError(f"tuning queries must be (Q >= 1, {self.dim}), got shape {text.shape}")
            text = l2_normalize(text[:TUNE_MAX_QUERIES], what="tuning queries")
        except MusicSearchError as exc:
            log.warning("nprobe not tuned (IVF%d scans nlist/32 cells): %s", int(index.nlist), exc)
            return None
        rng = np.random.default_rng(self.seed)
        n = vecs.shape[0]
        k = min(TUNE_K, n)
        groups: dict[str, np.ndarray] = {"text": text}
        pick = np.sort(rng.choice(n, size=min(n, TUNE_EXAMPLES), replace=False))
        groups["example"] = np.ascontiguousarray(vecs[pick])
        exact_kth = {
            g: faiss.knn(q, vecs, k, metric=faiss.METRIC_INNER_PRODUCT)[0][:, k - 1] for g, q in groups.items()
        }

        def search(q: np.ndarray, nprobe: int) -> np.ndarray:
            return np.asarray(index.search(q, k, params=faiss.SearchParametersIVF(nprobe=nprobe))[0])  # type: ignore[call-arg]

        tuning = tune_nprobe(search, groups, exact_kth, nlist=int(index.nlist), target=self.target_recall, k=k)
        log.info(
            "IVF%d over %d vectors: nprobe %d reaches recall@%d %s (target %.2f; %s; measured in %.1f s)",
            int(index.nlist),
            n,
            tuning.nprobe,
            k,
            ", ".join(f"{g} {r:.3f}" for g, r in tuning.recall.items()),
            self.target_recall,
            ", ".join(f"{g}: {c} queries" for g, c in tuning.queries.items()),
            time.perf_counter() - t0,
        )
        return tuning

    def _selector_of(self, ids: np.ndarray) -> Any:
        """The selector that removes ``ids`` (int64, kept alive by the caller): a hash set, or the plain array
        once an IVF index keeps an id -> position map (built by :meth:`get`), which FAISS then removes by lookup."""
        index: Any = faiss.downcast_index(self._index)
        if self.mode == "ivf" and index.direct_map.type == _ID_HASHTABLE:
            return faiss.IDSelectorArray(ids.size, faiss.swig_ptr(ids))
        return faiss.IDSelectorBatch(ids.size, faiss.swig_ptr(ids))

    # -- hooks ---------------------------------------------------------------------------------------------

    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(self):
            self._index.remove_ids(self._selector_of(ids))  # upsert
        self._index.add_with_ids(vectors, ids)
        n = len(self)
        if self.mode == "exact" and n >= self.exact_threshold:
            log.info("store reached %d vectors (threshold %d): switching to IVF", n, self.exact_threshold)
            self._rebuild(ivf=True)
        elif self.mode == "ivf" and n > self.retrain_growth * self._trained_n:
            log.info("store grew from %d to %d vectors since IVF training: retraining", self._trained_n, n)
            self._rebuild(ivf=True)

    def _remove(self, ids: np.ndarray) -> int:
        removed = int(self._index.remove_ids(self._selector_of(ids)))
        if self.mode == "ivf" and len(self) < self.exact_threshold // 2:
            log.info("store shrank to %d vectors: switching back to exact search", len(self))
            self._rebuild(ivf=False)
        return removed

    def _rebuild(self, *, ivf: bool) -> None:
        """Re-create the index (exact flat, or IVF trained on every stored vector) holding the same vectors."""
        parts = list(self._export(1 << 30))
        ids = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
        vecs = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, self.dim), np.float32)
        if ivf:
            nlist = min(self.nlist or default_nlist(ids.size), ids.size)
            index: Any = faiss.index_factory(self.dim, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = self.seed
            index.cp.max_points_per_centroid = 64  # train on <= 64·nlist vectors: 4x faster, same recall here
            index.train(vecs)
            self._trained_n = ids.size
        else:
            index = self._new_flat()
            self._trained_n = 0
        index.add_with_ids(vecs, ids)
        self._tuning = None
        if ivf and self.nprobe is None and self.target_recall is not None:
            self._tuning = self._tune(index, vecs)
        self._index = index

    def _search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        n = len(self)
        k_search = min(n, k + _TIE_MARGIN)
        sel, keep = _selector(allowed) if allowed is not None else (None, None)
        if self.mode == "exact":
            params: Any = faiss.SearchParameters(sel=sel) if sel is not None else None  # type: ignore[call-arg]
        else:
            index: Any = faiss.downcast_index(self._index)
            nprobe = self._effective_nprobe(index)
            if allowed is not None:  # scan more cells when few ids are allowed, to find k of them
                nprobe = min(int(index.nlist), math.ceil(nprobe * n / max(1, allowed.size)))
            params = faiss.SearchParametersIVF(sel=sel, nprobe=nprobe)  # type: ignore[call-arg]
        while True:
            scores, ids = self._index.search(queries, k_search, params=params)
            # When the k-th score still ties with the last one fetched, more equal scores may lie beyond: fetch
            # more, so that the tie rule (lower id first) picks among all of them.
            col = min(k, k_search) - 1
            unsettled = (ids[:, -1] >= 0) & (scores[:, col] == scores[:, -1])
            if k_search >= n or not unsettled.any():
                break
            k_search = min(n, 4 * k_search)
        del keep  # the selector's array was needed until the searches returned
        return sort_hits(scores, ids, k)

    def _all_ids(self) -> np.ndarray:
        if len(self) == 0:
            return np.zeros(0, np.int64)
        if self.mode == "exact":
            return faiss.vector_to_array(self._index.id_map).astype(np.int64)
        index: Any = faiss.downcast_index(self._index)
        invlists = index.invlists
        parts = [
            faiss.rev_swig_ptr(invlists.get_ids(cell), int(invlists.list_size(cell))).astype(np.int64)
            for cell in range(int(index.nlist))
            if invlists.list_size(cell)
        ]
        return np.concatenate(parts)

    def _get(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(self) == 0:
            return np.zeros((ids.size, self.dim), np.float32), np.zeros(ids.size, bool)
        index: Any = self._index  # IndexIDMap2: reconstructs through its id -> row map
        if self.mode == "ivf":
            index = faiss.downcast_index(self._index)
            if index.direct_map.type != _ID_HASHTABLE:  # id -> list position, kept up to date by FAISS
                index.set_direct_map_type(_ID_HASHTABLE)
        try:  # IVF-Flat codes are the raw floats: both modes return the vectors as stored
            return np.asarray(index.reconstruct_batch(ids), np.float32), np.ones(ids.size, bool)
        except RuntimeError:  # an id not stored: find which (a pass over the ids), read the others
            found = np.isin(ids, self._all_ids())
            out = np.zeros((ids.size, self.dim), np.float32)
            if found.any():
                out[found] = index.reconstruct_batch(ids[found])
            return out, found

    def _export(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        n = len(self)
        if n == 0:
            return
        if self.mode == "exact":
            idmap: Any = self._index
            all_ids = faiss.vector_to_array(idmap.id_map).astype(np.int64)
            flat = faiss.downcast_index(idmap.index)
            for start in range(0, n, batch_size):
                stop = min(n, start + batch_size)
                yield all_ids[start:stop], flat.reconstruct_n(start, stop - start)
            return
        index: Any = faiss.downcast_index(self._index)
        invlists = index.invlists
        buf_ids: list[np.ndarray] = []
        buf_vecs: list[np.ndarray] = []
        held = 0
        for cell in range(int(index.nlist)):
            size = int(invlists.list_size(cell))
            if size == 0:
                continue
            ids = faiss.rev_swig_ptr(invlists.get_ids(cell), size).copy()
            codes = faiss.rev_swig_ptr(invlists.get_codes(cell), size * int(invlists.code_size))
            buf_ids.append(ids.astype(np.int64, copy=False))
            buf_vecs.append(codes.view(np.float32).reshape(size, self.dim).copy())  # IVF-Flat codes are raw floats
            held += size
            if held >= batch_size:
                yield np.concatenate(buf_ids), np.concatenate(buf_vecs)
                buf_ids, buf_vecs, held = [], [], 0
        if buf_ids:
            yield np.concatenate(buf_ids), np.concatenate(buf_vecs)

    def _save(self, dest: Path, token: str) -> dict[str, Any]:
        name = f"data-{token}.faiss"
        tmp = dest / f".{name}.tmp"
        try:
            faiss.write_index(self._index, str(tmp))
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, dest / name)
        finally:
            tmp.unlink(missing_ok=True)
        return {
            "files": [name],
            "mode": self.mode,
            "exact_threshold": self.exact_threshold,
            "nlist": self.nlist,
            "nprobe": self.nprobe,
            "retrain_growth": self.retrain_growth,
            "seed": self.seed,
            "trained_n": self._trained_n,
            "target_recall": self.target_recall,
            "tuning": None if self._tuning is None else self._tuning.to_json(),
        }

    @classmethod
    def _open(cls, path: Path, manifest: dict[str, Any]) -> FaissBackend:
        backend = cls(
            int(manifest["dim"]),
            exact_threshold=int(manifest["exact_threshold"]),
            nlist=manifest.get("nlist"),
            nprobe=manifest.get("nprobe"),
            retrain_growth=float(manifest["retrain_growth"]),
            seed=int(manifest["seed"]),
            target_recall=_saved_target(manifest),
        )
        file = path / str(manifest["files"][0])
        try:
            index = faiss.read_index(str(file))
        except RuntimeError as exc:
            raise MusicSearchError(f"cannot read FAISS index {file}: {exc}; re-index or restore the store") from exc
        if index.d != backend.dim:
            raise MusicSearchError(f"{file} holds {index.d}-d vectors but its manifest says {backend.dim}")
        backend._index = index
        backend._trained_n = int(manifest.get("trained_n", 0))
        tuning = manifest.get("tuning")
        backend._tuning = None if tuning is None else NprobeTuning.from_json(tuning)
        return backend
