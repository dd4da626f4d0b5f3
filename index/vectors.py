"""FAISS over the segment vectors: exact (flat inner product), HNSW, or IVF-PQ, with ids equal to SQLite's.

The FAISS file is derived from the SQLite store and named after the store's generation
(``vectors-<generation>.faiss``), written to a temporary file and renamed: a reader never sees a half-written
file, and a file of an older generation is simply rebuilt. Filters reach FAISS as an id selector, so a filtered
search ranks only the allowed segments instead of truncating an unfiltered top-k.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import faiss
import numpy as np

from encoder.checkpoint import atomic_write

log = logging.getLogger(__name__)

IndexType = Literal["flat", "hnsw", "ivfpq"]
INDEX_TYPES: tuple[str, ...] = ("auto", "flat", "hnsw", "ivfpq")
AUTO_HNSW_FROM = 200_000
"""``auto`` keeps exact search up to this many segments (a flat scan stays in the milliseconds), then HNSW."""
_GPU_RESOURCES = None  # one faiss.StandardGpuResources per process, created on first use


@dataclass(frozen=True)
class SearchSettings:
    """Recall/speed knobs of the approximate indexes (bench/search.py, 1M clustered 512-d vectors): HNSW
    reaches recall@10 0.98 in 0.4 ms; IVF-PQ shortlists ``ivf_k_factor`` x k candidates by their 64-byte PQ codes
    and re-ranks them by 8-bit scalar codes (576 bytes a vector in RAM against 2 KB for flat or HNSW): recall@10
    0.96 in 0.6 ms. A shorter list loses recall at 1M (0.86 at 20x), since PQ ranks the points of a query's
    cluster too coarsely; nprobe past 16 changes little."""

    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 128
    ivf_nprobe: int = 32
    ivf_k_factor: int = 50


def resolve_type(requested: str, count: int) -> IndexType:
    if requested not in INDEX_TYPES:
        raise ValueError(f"unknown index type {requested!r}; choose one of {INDEX_TYPES}")
    if requested == "auto":
        return "hnsw" if count >= AUTO_HNSW_FROM else "flat"
    return requested  # type: ignore[return-value]


def build(ids: np.ndarray, vectors: np.ndarray, kind: IndexType, settings: SearchSettings = SearchSettings(),
          seed: int = 0) -> faiss.Index:
    """An index over ``vectors`` ``[N, D]`` (unit rows) answering with ``ids``; IVF-PQ trains on a sample.
    Rows are added in id order, so that :func:`id_map` is sorted."""
    dim = vectors.shape[1]
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) > 1 and not (ids[1:] > ids[:-1]).all():
        order = np.argsort(ids, kind="stable")
        ids, vectors = ids[order], vectors[order]
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if kind == "flat" or (kind == "ivfpq" and len(vectors) < 2):  # IVF-PQ: nothing to train on yet, same answers
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    elif kind == "hnsw":
        graph = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = settings.hnsw_ef_construction
        index = faiss.IndexIDMap2(graph)
    elif kind == "ivfpq":
        index = faiss.IndexIDMap2(_train_ivfpq(vectors, seed))
    else:
        raise ValueError(f"unknown index type {kind!r}")
    if len(vectors):
        index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))
    return index


def _train_ivfpq(vectors: np.ndarray, seed: int) -> faiss.IndexRefine:
    """IVF-PQ (coarse lists + 64-byte codes) refined by 8-bit scalar codes, trained on a sample."""
    count, dim = vectors.shape
    nlist = max(1, min(int(4 * math.sqrt(count)), count // 39))
    subquantizers = next(m for m in (64, 32, 16, 8, 4, 2, 1) if dim % m == 0)
    bits = 8 if count >= 256 * 39 else max(1, int(math.log2(max(count // 39, 2))))
    coarse = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, subquantizers, bits, faiss.METRIC_INNER_PRODUCT)
    if bits < 8:  # a small library: fewer points per centroid than faiss recommends is expected, not a warning
        coarse.cp.min_points_per_centroid = coarse.pq.cp.min_points_per_centroid = 1
    refine = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    index = faiss.IndexRefine(coarse, refine)  # faiss's Python layer keeps coarse and refine alive with it
    sample = vectors
    if count > 64 * nlist:  # k-means needs ~40-256 points per centroid; 64 keeps training quick
        sample = vectors[np.sort(np.random.default_rng(seed).choice(count, 64 * nlist, replace=False))]
    index.train(sample)
    return index


def is_current(index: faiss.Index, kind: IndexType) -> bool:
    """Whether a loaded file has the structure :func:`build` makes for ``kind`` (older files are rebuilt)."""
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else None
    if kind == "ivfpq":
        return isinstance(inner, (faiss.IndexRefine, faiss.IndexFlatIP))
    return isinstance(inner, faiss.IndexHNSWFlat if kind == "hnsw" else faiss.IndexFlatIP)


def id_map(index: faiss.Index) -> np.ndarray:
    """The segment id of every position in ``index``, ascending (a filtered IVF-PQ search maps its selector
    by it)."""
    return faiss.vector_to_array(index.id_map).astype(np.int64)


def on_gpu(index: faiss.Index, kind: IndexType) -> faiss.Index | None:
    """A copy of a flat ``index`` on GPU 0 for unfiltered searches, or None: without faiss-gpu or a GPU, for
    HNSW and refined IVF-PQ (no GPU versions in faiss), or when the copy fails. The CPU index stays for filtered
    searches, since GPU indexes take no id selector."""
    global _GPU_RESOURCES
    if kind != "flat" or not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        return None
    try:
        _GPU_RESOURCES = _GPU_RESOURCES or faiss.StandardGpuResources()
        return faiss.index_cpu_to_gpu(_GPU_RESOURCES, 0, index)
    except RuntimeError as exc:
        log.warning("searching on the CPU: the %s index does not move to the GPU (%s)", kind, exc)
        return None


def search(index: faiss.Index, kind: IndexType, queries: np.ndarray, k: int, allowed: np.ndarray | None = None,
           settings: SearchSettings = SearchSettings(), gpu: faiss.Index | None = None,
           positions: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) ``[Q, k]``; ids are -1 where fewer than k segments exist or pass the filter. Unfiltered
    searches use ``gpu`` (:func:`on_gpu`) when given. A filtered IVF-PQ search needs ``positions``
    (:func:`id_map`): faiss hands a refined index's coarse stage no id map, so its selector takes positions."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if gpu is not None and allowed is None:
        return gpu.search(queries, k)
    selector = None if allowed is None else faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
    inner = faiss.downcast_index(index.index)
    if kind == "ivfpq" and isinstance(inner, faiss.IndexRefine):
        coarse = faiss.SearchParametersIVF(nprobe=settings.ivf_nprobe)
        params = faiss.IndexRefineSearchParameters(k_factor=settings.ivf_k_factor, base_index_params=coarse)
        if allowed is None:
            return index.search(queries, k, params=params)
        if positions is None:
            positions = id_map(index)
        allowed = np.asarray(allowed, dtype=np.int64)
        found = np.searchsorted(positions, allowed).clip(0, max(len(positions) - 1, 0))
        hit = found[positions[found] == allowed] if len(positions) else found[:0]
        coarse.sel = selector = faiss.IDSelectorBatch(np.ascontiguousarray(hit, dtype=np.int64))
        scores, rows = inner.search(queries, k, params=params)
        return scores, np.where(rows >= 0, positions[rows.clip(0)], -1)
    if kind == "hnsw":
        params = faiss.SearchParametersHNSW(efSearch=max(settings.hnsw_ef_search, k))
    else:
        params = faiss.SearchParameters()
    if selector is not None:
        params.sel = selector
    return index.search(queries, k, params=params)


def file_for(index_dir: Path, generation: int) -> Path:
    return index_dir / f"vectors-{generation}.faiss"


def save(index: faiss.Index, index_dir: Path, generation: int) -> Path:
    """Write atomically, then drop the files of older generations (a newer one, written meanwhile by a build
    beside a reader that rebuilt a stale generation, stays)."""
    target = atomic_write(file_for(index_dir, generation), lambda tmp: faiss.write_index(index, tmp))
    for old in index_dir.glob("vectors-*.faiss"):
        number = old.stem.removeprefix("vectors-")
        if number.isdigit() and int(number) < generation:
            old.unlink(missing_ok=True)
    return target


def load(index_dir: Path, generation: int) -> faiss.Index | None:
    """The FAISS file of this generation, or None when it is missing or unreadable (it is then rebuilt)."""
    path = file_for(index_dir, generation)
    if not path.is_file():
        return None
    try:
        return faiss.read_index(str(path))
    except RuntimeError:
        return None
