"""Vector search: build time, latency p50/p99 (one query at a time, as the app searches) and recall@10 against
exact search, for each index type at several library sizes.

Vectors: clustered unit vectors (1,000 Gaussian clusters in 512-d), as video embeddings are; queries are
perturbed library vectors. They are stored in a real index folder (SQLite + FAISS file) and searched through
``VideoIndex.search``, the path the product takes (IVF-PQ: a ``ivf_k_factor`` x k shortlist by PQ codes, re-ranked
by 8-bit scalar codes).

    python bench/search.py                       # 10k, 100k and 1M vectors
    python bench/search.py --sizes 10000 --queries 100
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo before bench/: bench/encoder.py must not shadow encoder

from index import IndexInfo, VideoIndex, vectors  # noqa: E402
from index.store import NewVideo, Store  # noqa: E402

from report import save_table  # noqa: E402

def clustered(count: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((1000, dim)).astype(np.float32)
    data = np.empty((count, dim), dtype=np.float32)
    for start in range(0, count, 100_000):  # in chunks: 1M x 512 float32 is 2 GB already
        n = min(100_000, count - start)
        data[start:start + n] = centers[rng.integers(0, 1000, n)] + 0.6 * rng.standard_normal((n, dim),
                                                                                              dtype=np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    return data


def store_vectors(folder: Path, data: np.ndarray, per_video: int = 1000) -> tuple[Store, np.ndarray]:
    """``data`` as the segments of synthetic videos in a fresh index store; returns the store and the ids."""
    store = Store(folder, create=True)
    for start in range(0, len(data), per_video):
        windows = [(float(i), float(i + 1), False, None, row) for i, row in enumerate(data[start:start + per_video])]
        store.commit_video(NewVideo(f"/bench/video{start // per_video:06d}.mp4", f"{start:064x}", 1, 0.0, 1.0,
                                    segments=windows))
    low, high, count = store.db.execute("SELECT MIN(id), MAX(id), COUNT(*) FROM segments").fetchone()
    assert (low, high, count) == (1, len(data), len(data)), "a fresh store numbers segments 1..N in insert order"
    return store, np.arange(1, len(data) + 1, dtype=np.int64)


def measure(kind: str, store: Store, ids: np.ndarray, data: np.ndarray, queries: np.ndarray, truth: np.ndarray,
            k: int) -> dict:
    store.set_info(IndexInfo("bench", "", 0, data.shape[1], kind, 1.0, 1.0))
    started = time.perf_counter()
    built = vectors.build(ids, data, kind)
    build_s = time.perf_counter() - started
    vectors.save(built, store.dir, store.generation)
    del built
    index = VideoIndex.open(store.dir)
    for query in queries[:10]:  # warm-up: first touches of the index's pages
        index.search(query[None], k)
    latencies, found = [], []
    for query in queries:
        started = time.perf_counter()
        _, hits = index.search(query[None], k)
        latencies.append(time.perf_counter() - started)
        found.append(hits[0] - 1)  # segment ids start at 1, rows of ``data`` at 0
    index.close()
    recall = np.mean([len(set(f.tolist()) & set(t.tolist())) / k for f, t in zip(found, truth)])
    ms = np.array(latencies) * 1000
    return {"type": kind, "vectors": len(data), "build_s": round(build_s, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "recall@10": round(float(recall), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--types", default="flat,hnsw,ivfpq")
    parser.add_argument("--out", default="search")
    args = parser.parse_args()
    k, rows, load = 10, [], os.getloadavg()[0]  # other work on the machine shows in the latencies
    for size in (int(s) for s in args.sizes.split(",")):
        data = clustered(size, args.dim, seed=0)
        rng = np.random.default_rng(1)
        picks = rng.integers(0, size, args.queries)
        noise = rng.standard_normal((args.queries, args.dim), dtype=np.float32) / np.sqrt(args.dim)
        queries = data[picks] + 0.3 * noise
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        exact = faiss.IndexFlatIP(args.dim)
        exact.add(data)
        _, truth = exact.search(queries, k)
        with tempfile.TemporaryDirectory(prefix="bench-search-") as folder:
            store, ids = store_vectors(Path(folder), data)
            for kind in args.types.split(","):
                row = measure(kind, store, ids, data, queries, truth, k)
                print(row, flush=True)
                rows.append(row)
            store.close()
        del data, exact
    machine = (f"{platform.machine()}, {os.cpu_count()} cores, faiss {faiss.__version__} "
               f"({faiss.omp_get_max_threads()} threads), no GPU")
    save_table(args.out, machine, ["vectors", "type", "build_s", "p50_ms", "p99_ms", "recall@10"], rows,
               note=f"VideoIndex.search; load average {load:.1f} at the start; IVF-PQ re-ranks "
                    f"{vectors.SearchSettings().ivf_k_factor} x k by 8-bit codes")

if __name__ == "__main__":
    main()
