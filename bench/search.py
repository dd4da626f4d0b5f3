"""Vector search: build time, latency p50/p99 (one query at a time, as the app searches) and recall@10 against
exact search, for each index type at several library sizes.

Vectors: clustered unit vectors (1,000 Gaussian clusters in 512-d), as video embeddings are; queries are
perturbed library vectors. The index code is the product's own (``index.vectors``), IVF-PQ with its exact
re-ranking of ``REFINE`` x k candidates.

    python bench/search.py                       # 10k, 100k and 1M vectors
    python bench/search.py --sizes 10000 --queries 100
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo before bench/: bench/encoder.py must not shadow encoder

from index import vectors  # noqa: E402

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


def measure(kind: str, data: np.ndarray, queries: np.ndarray, truth: np.ndarray, k: int) -> dict:
    ids = np.arange(len(data), dtype=np.int64)
    started = time.perf_counter()
    index = vectors.build(ids, data, kind)
    build_s = time.perf_counter() - started
    latencies, found = [], []
    for query in queries:
        started = time.perf_counter()
        if kind == "ivfpq":
            _, shortlist = vectors.search(index, kind, query[None], k * vectors.REFINE)
            rows = {int(i): data[i] for i in shortlist[0] if i >= 0}
            _, hits = vectors.rerank(query[None], shortlist, rows, k)
        else:
            _, hits = vectors.search(index, kind, query[None], k)
        latencies.append(time.perf_counter() - started)
        found.append(hits[0])
    recall = np.mean([len(set(f.tolist()) & set(t.tolist())) / k for f, t in zip(found, truth)])
    ms = np.array(latencies) * 1000
    return {"type": kind, "vectors": len(data), "build_s": round(build_s, 1), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2), "recall@10": round(float(recall), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--types", default="flat,hnsw,ivfpq")
    parser.add_argument("--out", default="search")
    args = parser.parse_args()
    k, rows = 10, []
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
        for kind in args.types.split(","):
            row = measure(kind, data, queries, truth, k)
            print(row, flush=True)
            rows.append(row)
        del data, exact
    machine = (f"{platform.machine()}, {os.cpu_count()} cores, faiss {faiss.__version__} "
               f"({faiss.omp_get_max_threads()} threads), no GPU")
    save_table(args.out, machine, ["vectors", "type", "build_s", "p50_ms", "p99_ms", "recall@10"], rows)

if __name__ == "__main__":
    main()
