"""Write a demo world to disk: clips per split, manifests in the users' format, class names, chat questions,
and the full ground truth (``world.json``). Deterministic from the seed; an existing complete world is kept."""

from __future__ import annotations

import json
import os
import random
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .render import render, write_mp4
from .world import ACTIONS, ClipSpec, WorldConfig, caption, questions, sample_clip

SPLITS = ("train", "val", "test")


def plan_world(config: WorldConfig) -> dict[str, list[ClipSpec]]:
    """Every clip of every split (specs only): each split draws from its own seeded stream."""
    world = {}
    for offset, split in enumerate(SPLITS):
        rng = random.Random(f"{config.seed}/{split}")
        count = getattr(config, split)
        world[split] = [sample_clip(rng, f"{split}_{i:04d}", rng.random() < config.long_fraction)
                        for i in range(count)]
    return world


def _render_one(job: tuple[dict[str, Any], str]) -> str:
    spec_dict, path = job
    spec = ClipSpec.from_dict(spec_dict)
    write_mp4(render(spec), spec.fps, Path(path))
    return path


def manifest_rows(spec: ClipSpec, path: str) -> list[dict[str, Any]]:
    """Classification/retrieval rows: the whole clip (its first action's label) and, for clips with several
    actions, one row per action window."""
    first = spec.actions[0]
    whole = {"path": path, "label": first.label, "caption": caption(spec), "duration": spec.duration,
             "actions": [asdict(a) for a in spec.actions], "clip": spec.name}
    if len(spec.actions) == 1:
        return [whole]
    return [whole | {"moments": True}] + [
        {"path": path, "label": a.label, "caption": caption(spec, a), "start": a.start, "end": a.end,
         "clip": spec.name} for a in spec.actions]


def generate_world(out: str | Path, config: WorldConfig = WorldConfig(), workers: int | None = None,
                   progress: bool = True) -> Path:
    out = Path(out)
    marker = out / "world.json"
    if marker.is_file() and json.loads(marker.read_text()).get("config") == asdict(config):  # plain JSON values
        return out
    world = plan_world(config)
    jobs = []
    for split, specs in world.items():
        (out / split).mkdir(parents=True, exist_ok=True)
        jobs += [(spec.to_dict(), str(out / split / f"{spec.name}.mp4")) for spec in specs]
    workers = workers or max(1, (os.cpu_count() or 1))
    with ProcessPoolExecutor(workers) as pool:
        for _ in tqdm(pool.map(_render_one, jobs, chunksize=4), total=len(jobs), unit="clip", disable=not progress,
                      desc="rendering the demo world"):
            pass
    for split, specs in world.items():
        rows, qa = [], []
        for spec in specs:
            path = f"{split}/{spec.name}.mp4"
            rows += manifest_rows(spec, path)
            for question, answer in questions(spec):
                qa.append({"path": path, "conversations": [{"role": "user", "content": question},
                                                           {"role": "assistant", "content": answer}]})
        _write(out / f"{split}.jsonl", rows)
        _write(out / f"{split}_clips.jsonl", [r for r in rows if "start" not in r])
        _write(out / f"{split}_qa.jsonl", qa)
    (out / "classes.json").write_text(json.dumps(list(ACTIONS), indent=1))
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps({"config": asdict(config), "clips": {s: [c.to_dict() for c in specs]
                                                                   for s, specs in world.items()}}))
    tmp.replace(marker)  # written last: a world without it is incomplete and is generated again
    return out


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)


def load_world(out: str | Path) -> dict[str, list[ClipSpec]]:
    data = json.loads((Path(out) / "world.json").read_text())
    return {split: [ClipSpec.from_dict(c) for c in clips] for split, clips in data["clips"].items()}
