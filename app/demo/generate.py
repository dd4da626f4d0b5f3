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

from encoder.checkpoint import atomic_write

from .render import render, write_mp4
from .world import ACTIONS, ClipSpec, WorldConfig, caption, negative_captions, questions, sample_clip

SPLITS = ("train", "val", "test")
DESCRIBE = "Describe the video."


def plan_world(config: WorldConfig) -> dict[str, list[ClipSpec]]:
    """Every clip of every split (specs only): each split draws from its own seeded stream, and a clip whose
    caption another clip of its split already has is drawn again, so that text->video retrieval within a split
    has one right answer per caption."""
    world = {}
    for split in SPLITS:
        rng = random.Random(f"{config.seed}/{split}")
        clips: list[ClipSpec] = []
        seen: set[str] = set()
        while len(clips) < getattr(config, split):
            spec = sample_clip(rng, f"{split}_{len(clips):04d}", rng.random() < config.long_fraction)
            if caption(spec) not in seen:
                seen.add(caption(spec))
                clips.append(spec)
        world[split] = clips
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
    whole = {"path": path, "label": first.label, "caption": caption(spec), "negatives": negative_captions(spec),
             "duration": spec.duration, "actions": [asdict(a) for a in spec.actions], "clip": spec.name}
    if len(spec.actions) == 1:
        return [whole]
    return [whole | {"moments": True}] + [
        {"path": path, "label": a.label, "caption": caption(spec, a), "negatives": negative_captions(spec, a),
         "start": a.start, "end": a.end, "clip": spec.name} for a in spec.actions]


def generate_world(out: str | Path, config: WorldConfig = WorldConfig(), workers: int | None = None,
                   progress: bool = True, splits: tuple[str, ...] = SPLITS) -> Path:
    """Render ``splits`` of the world into ``out``; a split already rendered with the same clips is kept (the
    app's first start renders only the test split; training renders the rest when it needs them). Each split
    draws from its own stream, so a config that changes one split's size renders that split alone again."""
    out = Path(out)
    marker = out / "world.json"
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; the world has {list(SPLITS)}")
    recorded = json.loads(marker.read_text()) if marker.is_file() else {}
    rendered = recorded.get("clips", {})
    if recorded.get("config") == asdict(config) and set(splits) <= set(rendered):
        return out  # a later start: nothing to plan (about a second for the default world)
    world = plan_world(config)
    planned = json.loads(json.dumps({split: [c.to_dict() for c in clips] for split, clips in world.items()}))
    done = {split: clips for split, clips in rendered.items() if planned.get(split) == clips}
    missing = [split for split in SPLITS if split in splits and split not in done]
    if missing:
        _render(out, world, missing, workers, progress)
        done.update({split: planned[split] for split in missing})
    record = {"config": asdict(config), "clips": {s: done[s] for s in SPLITS if s in done}}
    if record != recorded:
        (out / "classes.json").write_text(json.dumps(list(ACTIONS), indent=1))
        # last: a split it does not list is redone
        atomic_write(marker, lambda tmp: Path(tmp).write_text(json.dumps(record)))
    return out


def _render(out: Path, world: dict[str, list[ClipSpec]], splits: list[str], workers: int | None,
            progress: bool) -> None:
    """The clips of ``splits`` and their manifests, questions and conversations."""
    jobs = []
    for split in splits:
        (out / split).mkdir(parents=True, exist_ok=True)
        jobs += [(spec.to_dict(), str(out / split / f"{spec.name}.mp4")) for spec in world[split]]
    with ProcessPoolExecutor(workers or max(1, (os.cpu_count() or 1))) as pool:
        for _ in tqdm(pool.map(_render_one, jobs, chunksize=4), total=len(jobs), unit="clip", disable=not progress,
                      desc=f"rendering the demo world ({', '.join(splits)})"):
            pass
    for split in splits:
        rows, qa, chats = [], [], []
        for spec in world[split]:
            path = f"{split}/{spec.name}.mp4"
            rows += manifest_rows(spec, path)
            pairs = questions(spec)
            for question, answer in pairs:
                qa.append({"path": path, "conversations": _turns([(question, answer)])})
            random.Random(spec.seed).shuffle(pairs)  # every question type gets to be asked first
            # the description comes last, so that no answer can be read off it instead of the video
            chats.append({"path": path, "conversations": _turns(pairs + [(DESCRIBE, caption(spec))])})
        _write(out / f"{split}.jsonl", rows)
        _write(out / f"{split}_clips.jsonl", [r for r in rows if "start" not in r])
        _write(out / f"{split}_actions.jsonl", [r for r in rows if "moments" not in r])
        _write(out / f"{split}_qa.jsonl", qa)
        _write(out / f"{split}_chat.jsonl", chats)


def _turns(pairs: list[tuple[str, str]]) -> list[dict[str, str]]:
    turns = []
    for question, answer in pairs:
        turns += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return turns


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(r) + "\n" for r in rows)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def load_world(out: str | Path) -> dict[str, list[ClipSpec]]:
    data = json.loads((Path(out) / "world.json").read_text())
    return {split: [ClipSpec.from_dict(c) for c in clips] for split, clips in data["clips"].items()}
