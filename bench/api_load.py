"""API load: N concurrent ``GET /api/search`` requests against a real server on loopback (uvicorn, one process),
over an index of the real sample videos with a tiny dual encoder; reports success count and latency p50/p99.

    python bench/api_load.py
    python bench/api_load.py --concurrency 50 --rounds 4
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import torch
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo before bench/: bench/encoder.py must not shadow encoder

from app.server import create_app  # noqa: E402
from app.settings import ServeSettings  # noqa: E402
from index import build_index  # noqa: E402
from index_build import TEXT, sample_videos  # noqa: E402
from report import save_table  # noqa: E402
from retrieval.dual_encoder import build_dual_encoder  # noqa: E402

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--out", default="api_load")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        library = Path(tmp) / "library"
        library.mkdir()
        for video in sample_videos():
            shutil.copy(video, library / video.name)
        torch.manual_seed(0)
        build_dual_encoder("fluxvit_tiny_patch14", text=TEXT, embed_dim=256).save(Path(tmp) / "dual.pt")
        build_index(library, Path(tmp) / "idx", Path(tmp) / "dual.pt", 256, window=2.0, show_progress=False)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(create_app(ServeSettings(index=Path(tmp) / "idx")), host="127.0.0.1",
                                               port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/api/search"
        httpx.get(url, params={"q": "warm up"}, timeout=120)

        def one(i: int) -> tuple[int, float]:
            started = time.perf_counter()
            code = httpx.get(url, params={"q": f"a person rides a bike {i}", "k": 10}, timeout=120).status_code
            return code, time.perf_counter() - started

        results = []
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            for _ in range(args.rounds):
                results += list(pool.map(one, range(args.concurrency)))
        wall = time.perf_counter() - started
        server.should_exit = True
        thread.join()
    codes = [c for c, _ in results]
    ms = np.array([t for _, t in results]) * 1000
    row = {"requests": len(results), "concurrency": args.concurrency, "ok": codes.count(200),
           "p50_ms": round(float(np.percentile(ms, 50)), 1), "p99_ms": round(float(np.percentile(ms, 99)), 1),
           "requests_per_s": round(len(results) / wall, 1)}
    machine = f"{platform.machine()}, {os.cpu_count()} cores, loopback, one uvicorn process, CPU text tower"
    save_table(args.out, machine, ["requests", "concurrency", "ok", "p50_ms", "p99_ms", "requests_per_s"], [row])

if __name__ == "__main__":
    main()
