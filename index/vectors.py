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
from typing import Literal, Mapping

import faiss
import numpy as np

from encoder.checkpoint import atomic_write

log = logging.getLogger(__name__)

IndexType = Literal["flat", "hnsw", "ivfpq"]
INDEX_TYPES: tuple[str, ...] = ("auto", "flat", "hnsw", "ivfpq")
REFINE = 10
"""IVF-PQ shortlists this many candidates per wanted hit for exact re-scoring."""
AUTO_HNSW_FROM = 200_000
"""``auto`` keeps exact search up to this many segments (a flat scan stays in the milliseconds), then HNSW."""
_GPU_RESOURCES = None  # one faiss.StandardGpuResources per process, created on first use


@dataclass(frozen=True)
class SearchSettings:
    """Recall/speed knobs of the approximate indexes. HNSW's reach recall@10 0.98 at 1M vectors in 0.4 ms;
    IVF-PQ saves memory at a cost in recall (0.73 at 1M with 10x re-ranking): see bench/search.py."""

    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 128
    ivf_nprobe: int = 32


def resolve_type(requested: str, count: int) -> IndexType:
    if requested not in INDEX_TYPES:
        raise ValueError(f"unknown index type {requested!r}; choose one of {INDEX_TYPES}")
    if requested == "auto":
        return "hnsw" if count >= AUTO_HNSW_FROM else "flat"
    return requested  # type: ignore[return-value]


def build(ids: np.ndarray, vectors: np.ndarray, kind: IndexType, settings: SearchSettings = SearchSettings(),
          seed: int = 0) -> faiss.Index:
    """An index over ``vectors`` ``[N, D]`` (unit rows) answering with ``ids``; IVF-PQ trains on a sample."""
    dim = vectors.shape[1]
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if kind == "flat":
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    elif kind == "hnsw":
        graph = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = settings.hnsw_ef_construction
        index = faiss.IndexIDMap2(graph)
    elif kind == "ivfpq" and len(vectors) < 2:
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))  # nothing to train quantisers on; search is the same
    elif kind == "ivfpq":
        nlist = max(1, min(int(4 * math.sqrt(len(vectors))), len(vectors) // 39))
        subquantizers = next(m for m in (64, 32, 16, 8, 4, 2, 1) if dim % m == 0)
        bits = 8 if len(vectors) >= 256 * 39 else max(1, int(math.log2(max(len(vectors) // 39, 2))))
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, subquantizers, bits, faiss.METRIC_INNER_PRODUCT)
        if bits < 8:  # a small library: fewer points per centroid than faiss recommends is expected, not a warning
            index.cp.min_points_per_centroid = index.pq.cp.min_points_per_centroid = 1
        sample = vectors
        if len(vectors) > 64 * nlist:  # k-means needs ~40-256 points per centroid; 64 keeps training quick
            pick = np.random.default_rng(seed).choice(len(vectors), 64 * nlist, replace=False)
            sample = vectors[np.sort(pick)]
        index.train(sample)
    else:
        raise ValueError(f"unknown index type {kind!r}")
    if len(vectors):
        index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))
    return index


def on_gpu(index: faiss.Index, kind: IndexType, settings: SearchSettings = SearchSettings()) -> faiss.Index | None:
    """A copy of ``index`` on GPU 0 for unfiltered searches, or None: without faiss-gpu or a GPU, for HNSW (no
    GPU graph in faiss), or when the copy fails. The CPU index stays for filtered searches, since GPU indexes
    take no id selector."""
    global _GPU_RESOURCES
    if kind == "hnsw" or not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        return None
    try:
        _GPU_RESOURCES = _GPU_RESOURCES or faiss.StandardGpuResources()
        gpu = faiss.index_cpu_to_gpu(_GPU_RESOURCES, 0, index)
        if kind == "ivfpq":
            faiss.GpuParameterSpace().set_index_parameter(gpu, "nprobe", settings.ivf_nprobe)
    except RuntimeError as exc:
        log.warning("searching on the CPU: the %s index does not move to the GPU (%s)", kind, exc)
        return None
    return gpu


def search(index: faiss.Index, kind: IndexType, queries: np.ndarray, k: int, allowed: np.ndarray | None = None,
           settings: SearchSettings = SearchSettings(), gpu: faiss.Index | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) ``[Q, k]``; ids are -1 where fewer than k segments exist or pass the filter. Unfiltered
    searches use ``gpu`` (:func:`on_gpu`) when given."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if gpu is not None and allowed is None:
        return gpu.search(queries, k)
    selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64)) if allowed is not None else None
    if kind == "hnsw":
        params = faiss.SearchParametersHNSW(efSearch=max(settings.hnsw_ef_search, k))
    elif kind == "ivfpq":
        params = faiss.SearchParametersIVF(nprobe=settings.ivf_nprobe)
    else:
        params = faiss.SearchParameters()
    if selector is not None:
        params.sel = selector
    return index.search(queries, k, params=params)


def rerank(queries: np.ndarray, shortlist: np.ndarray, stored: Mapping[int, np.ndarray], k: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner products of each query with its shortlisted ids (vectors looked up in ``stored``); top k."""
    scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    ids = np.full((len(queries), k), -1, dtype=np.int64)
    for q, candidates in enumerate(shortlist):
        kept = np.array([i for i in candidates if i in stored], dtype=np.int64)
        if len(kept):
            exact = np.stack([stored[int(i)] for i in kept]) @ queries[q]
            order = np.argsort(-exact, kind="stable")[:k]
            scores[q, :len(order)], ids[q, :len(order)] = exact[order], kept[order]
    return scores, ids


def file_for(index_dir: Path, generation: int) -> Path:
    return index_dir / f"vectors-{generation}.faiss"


def save(index: faiss.Index, index_dir: Path, generation: int) -> Path:
    """Write atomically, then drop the files of other generations."""
    target = atomic_write(file_for(index_dir, generation), lambda tmp: faiss.write_index(index, tmp))
    for old in index_dir.glob("vectors-*.faiss"):
        if old != target:
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
