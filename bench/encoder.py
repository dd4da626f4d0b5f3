"""Encoder throughput: clips/s, ms per clip and peak memory per model, token count and batch size.

On CPU each measurement runs in a fresh subprocess so that its peak RSS belongs to that configuration alone; on
CUDA the allocator's peak is reset per configuration, so those run in this process (no import per row). The
input is a clip sampled as ``encoder.plan`` would for that budget, so the patch embedding over the pool and the
token selection are part of the time, as in real use.

    python bench/encoder.py                      # the default matrix, CPU (and CUDA bf16 when present)
    python bench/encoder.py --models fluxvit_small_patch14 --tokens 1024,2048 --batch-sizes 1
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from encoder import create_model, estimate_gmacs, plan  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def measure(model_name: str, tokens: int, batch: int, device: str, repeats: int, queue: mp.Queue | None) -> dict:
    torch.manual_seed(0)
    p = plan(tokens, model_name)
    model = create_model(model_name).eval().to(device)
    video = torch.randn(batch, 3, p.frames, p.resolution, p.resolution, device=device)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda")
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode(), autocast:
        model.encode(video, keep_tokens=p.keep_tokens)  # warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            model.encode(video, keep_tokens=p.keep_tokens)
        if device == "cuda":
            torch.cuda.synchronize()
        elapsed = (time.perf_counter() - start) / repeats
    peak_mb = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    result = {
        "model": model_name, "tokens": tokens, "batch": batch, "device": device,
        "input": f"{p.frames}x{p.resolution}", "gmacs_per_clip": round(estimate_gmacs(model_name, p.tokens, p.pool_tokens), 2),
        "ms_per_clip": round(1000 * elapsed / batch, 2), "clips_per_s": round(batch / elapsed, 2),
        "peak_mem_mb": round(peak_mb, 1),
    }
    if queue is not None:
        queue.put(result)
    return result


def run_one(model_name: str, tokens: int, batch: int, device: str, repeats: int) -> dict:
    if device == "cuda":
        return measure(model_name, tokens, batch, device, repeats, None)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=measure, args=(model_name, tokens, batch, device, repeats, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def to_markdown(rows: list[dict], machine: str) -> str:
    head = "| model | device | batch | tokens | input | GMACs/clip | ms/clip | clips/s | peak MB | vs 2048 |\n"
    head += "|---|---|---|---|---|---|---|---|---|---|\n"
    lines = []
    for r in rows:
        ref = next((o for o in rows if (o["model"], o["device"], o["batch"], o["tokens"])
                    == (r["model"], r["device"], r["batch"], 2048)), None)
        ratio = f"{r['ms_per_clip'] / ref['ms_per_clip']:.2f}" if ref else "-"
        lines.append(f"| {r['model']} | {r['device']} | {r['batch']} | {r['tokens']} | {r['input']} | "
                     f"{r['gmacs_per_clip']} | {r['ms_per_clip']} | {r['clips_per_s']} | {r['peak_mem_mb']} | {ratio} |")
    return f"Machine: {machine}\n\n" + head + "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="fluxvit_tiny_patch14,fluxvit_small_patch14,fluxvit_base_patch14,"
                        "fluxvit_large_patch14")
    parser.add_argument("--tokens", default="512,1024,2048,3072")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-gmacs", type=float, default=3000.0,
                        help="skip settings whose batch costs more than this many GMACs (CPU time guard)")
    parser.add_argument("--out", type=Path, default=RESULTS / "encoder")
    args = parser.parse_args()

    rows = []
    measured: set[tuple[str, int, int, str]] = set()
    combos = [(m, t, b, d) for d in args.devices.split(",") for m in args.models.split(",")
              for b in map(int, args.batch_sizes.split(",")) for t in map(int, args.tokens.split(","))]
    for index, (model_name, tokens, batch, device) in enumerate(combos, 1):
        cost = batch * estimate_gmacs(model_name, min(tokens, plan(tokens, model_name).tokens))
        if device == "cpu" and cost > args.max_gmacs:
            print(f"[{index}/{len(combos)}] skip {model_name} {tokens} tok x{batch} on cpu ({cost:.0f} GMACs)")
            continue
        used = plan(tokens, model_name).tokens
        if (model_name, used, batch, device) in measured:
            print(f"[{index}/{len(combos)}] skip {model_name} {tokens} tok: the model's pool caps it at {used}")
            continue
        measured.add((model_name, used, batch, device))
        row = run_one(model_name, tokens, batch, device, args.repeats)
        rows.append(row)
        print(f"[{index}/{len(combos)}] {row}", flush=True)

    machine = f"{platform.processor() or platform.machine()}, {mp.cpu_count()} cores, torch {torch.__version__}"
    if torch.cuda.is_available():
        machine += f", {torch.cuda.get_device_name()}"
    table = to_markdown(rows, machine)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(table)
    args.out.with_suffix(".json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
