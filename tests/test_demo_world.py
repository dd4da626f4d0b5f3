"""The demo world: deterministic from its seed, readable by the product's own readers, and its ground truth
matches its pixels (decoded back from the written mp4 files)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from app.demo.generate import DESCRIBE, generate_world, load_world, plan_world
from app.demo.render import centroid_track, colour_mask, object_masks, render, write_mp4
from app.demo.world import (ACTIONS, COLOURS, COUNT_WORDS, OPPOSITE, QUESTION_KINDS, ROTATING_SHAPES, SHAPES, VERB,
                            ClipSpec, ObjectSpec, WorldConfig, caption, negative_captions, object_state,
                            question_kind, questions)
from chat.data import read_instructions
from encoder.video import read_annotations, read_frames

CONFIG = WorldConfig(train=30, val=6, test=40, seed=3)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_world(tmp_path_factory.mktemp("demo") / "world", CONFIG, workers=2, progress=False)


def test_the_world_follows_its_seed_and_splits_are_disjoint() -> None:
    first, again = plan_world(CONFIG), plan_world(CONFIG)
    assert first == again
    other = plan_world(WorldConfig(train=30, val=6, test=40, seed=4))
    assert first["train"] != other["train"]
    signature = {split: {(c.objects, c.actions, c.seed) for c in clips} for split, clips in first.items()}
    assert not signature["train"] & signature["test"] and not signature["train"] & signature["val"]
    every = [c for clips in first.values() for c in clips]
    assert {a.action for c in every for a in c.actions} == set(ACTIONS), "every action occurs"
    assert any(len(c.actions) > 1 for c in every) and {len(c.objects) for c in every} == {1, 2, 3}


def _digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_world_rendered_again_from_its_seed_is_bit_identical(world: Path, tmp_path: Path) -> None:
    again = generate_world(tmp_path / "again", CONFIG, workers=2, progress=False)
    first, second = _digests(world), _digests(again)
    assert len([name for name in first if name.endswith(".mp4")]) == CONFIG.train + CONFIG.val + CONFIG.test
    assert first == second


def test_the_same_frames_encode_to_the_same_file(tmp_path: Path) -> None:
    """A clip whose encodes differed with x264's assembly kernels (3 distinct files in 25) in the default world."""
    spec = plan_world(WorldConfig(train=628, val=0, test=0))["train"][627]
    frames = render(spec)
    encoded = {hashlib.sha256(write_mp4(frames, spec.fps, tmp_path / f"{i}.mp4").read_bytes()).hexdigest()
               for i in range(16)}
    assert len(encoded) == 1


def test_manifests_and_questions_read_with_the_products_readers(world: Path) -> None:
    rows = read_annotations(world / "test.jsonl")
    clips = read_annotations(world / "test_clips.jsonl")
    assert len(clips) == CONFIG.test and all(r.caption and r.label is not None for r in rows)
    assert all(Path(r.path).is_file() for r in clips)
    moments = [r for r in rows if r.start is not None]
    assert moments and all(r.end > r.start for r in moments)
    assert json.loads((world / "classes.json").read_text()) == list(ACTIONS)
    qa = read_instructions(world / "test_qa.jsonl")
    assert len(qa) >= 4 * CONFIG.test
    again = generate_world(world, CONFIG, progress=False)
    assert again == world and len(load_world(world)["test"]) == CONFIG.test


def test_captions_are_unique_within_a_split_and_files_per_task(world: Path) -> None:
    for split, clips in plan_world(CONFIG).items():
        captions = [caption(c) for c in clips]
        assert len(set(captions)) == len(captions), split
    actions = read_annotations(world / "test_actions.jsonl")
    chained = [c for c in load_world(world)["test"] if len(c.actions) > 1]
    assert len(actions) == CONFIG.test - len(chained) + sum(len(c.actions) for c in chained)
    assert all(r.label is not None for r in actions)
    conversations = read_instructions(world / "test_chat.jsonl")
    assert len(conversations) == CONFIG.test
    single = read_instructions(world / "test_qa.jsonl")
    assert sum(len(c.turns) for c in conversations) == len(single) + CONFIG.test
    specs = {f"{s.name}.mp4": s for s in load_world(world)["test"]}
    for conversation in conversations:
        assert conversation.turns[-1] == (DESCRIBE, caption(specs[Path(conversation.path).name]))
        asked = {question for question, _ in conversation.turns[:-1]}
        assert asked == {question for question, _ in questions(specs[Path(conversation.path).name])}


def _changed_words(first: str, second: str) -> list[str]:
    a, b = first.replace(",", "").split(), second.replace(",", "").split()
    return [y for x, y in zip(a, b) if x != y] if len(a) == len(b) else ["<length differs>"]


def test_hard_negatives_change_one_thing_that_makes_the_caption_wrong(world: Path) -> None:
    rows = read_annotations(world / "train.jsonl")
    assert all(len(r.negatives) >= 3 and r.caption not in r.negatives for r in rows)
    for spec in load_world(world)["train"]:
        for step in (None, *(spec.actions if len(spec.actions) > 1 else ())):
            steps = [step] if step else list(spec.actions)
            actor, truth = spec.objects[steps[0].actor], caption(spec, step)
            negatives = negative_captions(spec, step)
            assert negatives == negative_captions(spec, step), "deterministic"
            assert truth not in negatives and len(set(negatives)) == len(negatives)
            shape, colour, action = negatives[:3]
            assert _changed_words(truth, shape) in ([s] for s in SHAPES if s != actor.shape)
            assert _changed_words(truth, colour) in ([c] for c in COLOURS if c not in {o.colour for o in spec.objects})
            if steps[0].action in OPPOSITE:
                assert _changed_words(truth, action) == [VERB[OPPOSITE[steps[0].action]].split()[-1]]
            assert not action.startswith(f"a {actor.size} {actor.colour} {actor.shape} {VERB[steps[0].action]}")
            if len({s.action for s in steps}) > 1:
                assert negatives[3] == caption(replace(spec, actions=tuple(reversed(steps))))
            else:
                assert len(negatives) == 3


def test_every_question_has_one_kind_and_each_kind_answers_in_its_own_words() -> None:
    answers: dict[str, set[str]] = {kind: set() for kind in QUESTION_KINDS}
    for clip in (c for clips in plan_world(CONFIG).values() for c in clips):
        for question, answer in questions(clip):
            answers[question_kind(question)].add(answer)
    assert all(answers.values()), "every kind is asked"
    assert answers["colour"] <= set(COLOURS) and answers["shape"] <= set(SHAPES)
    assert answers["count"] <= set(COUNT_WORDS.values()) and answers["action"] <= set(VERB.values())
    assert all(a.startswith("it ") for a in answers["order"]) and all(" and the " in a for a in answers["swap"])
    with pytest.raises(ValueError, match="not a question the demo world asks"):
        question_kind("Is it raining?")


def test_splits_render_on_demand_and_keep_what_exists(tmp_path: Path) -> None:
    small = WorldConfig(train=4, val=2, test=3, seed=3)
    out = generate_world(tmp_path / "w", small, workers=1, progress=False, splits=("test",))
    assert not (out / "train").exists() and len(list((out / "test").glob("*.mp4"))) == 3
    stamp = (out / "test" / "test_0000.mp4").stat().st_mtime_ns
    generate_world(out, small, workers=1, progress=False)
    assert len(list((out / "train").glob("*.mp4"))) == 4 and set(load_world(out)) == {"train", "val", "test"}
    assert (out / "test" / "test_0000.mp4").stat().st_mtime_ns == stamp, "the test split is not rendered again"
    train_stamp = (out / "train" / "train_0000.mp4").stat().st_mtime_ns
    more_val = WorldConfig(train=4, val=5, test=3, seed=3)
    generate_world(out, more_val, workers=1, progress=False)
    assert len(read_annotations(out / "val_clips.jsonl")) == 5 and len(load_world(out)["val"]) == 5
    assert json.loads((out / "world.json").read_text())["config"]["val"] == 5
    assert (out / "train" / "train_0000.mp4").stat().st_mtime_ns == train_stamp, "only the changed split is redone"
    assert (out / "test" / "test_0000.mp4").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="unknown split"):
        generate_world(out, small, splits=("dev",))


def _frame_at(times: np.ndarray, t: float) -> int:
    return int(np.argmin(np.abs(times - t)))


def _quarter_turn_overlaps(before: np.ndarray, after: np.ndarray, colour: tuple[int, int, int],
                           centre: tuple[float, float]) -> tuple[float, float]:
    """IoU of the object's mask after the action with its mask before, turned a quarter clockwise and a quarter
    counter-clockwise about its centre (screen coordinates, y down)."""
    r = int(0.4 * min(before.shape[:2]))
    cx, cy = int(round(centre[0])), int(round(centre[1]))
    crops = []
    for frame in (before, after):
        mask = np.pad(colour_mask(frame[None], colour)[0], r)
        crops.append(mask[cy:cy + 2 * r + 1, cx:cx + 2 * r + 1])
    start, end = crops
    return _iou(np.rot90(start, k=-1), end), _iou(np.rot90(start, k=1), end)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _check(spec: ClipSpec, path: Path) -> None:
    decoded = read_frames(path)
    frames, times = decoded.data, decoded.timestamps
    first = spec.actions[0]
    for action in spec.actions:
        actor = spec.objects[action.actor]
        centre, area = centroid_track(frames, COLOURS[actor.colour])
        a = _frame_at(times, action.start - 0.05)
        b = _frame_at(times, action.end + 0.05)
        w, h = spec.width, spec.height
        where = f"{spec.name}: {actor.name} {action.action}"
        kind = action.action
        if kind == "moving left":
            assert centre[b, 0] < centre[a, 0] - 0.25 * w, where
        elif kind == "moving right":
            assert centre[b, 0] > centre[a, 0] + 0.25 * w, where
        elif kind == "moving up":
            assert centre[b, 1] < centre[a, 1] - 0.25 * h, where
        elif kind == "moving down":
            assert centre[b, 1] > centre[a, 1] + 0.25 * h, where
        elif kind == "growing":
            assert area[b] > 2.0 * area[a], where
        elif kind == "shrinking":
            assert area[b] < 0.4 * area[a], where
        elif kind == "appearing":
            assert area[a] == 0 and area[b] > 50, where
        elif kind == "disappearing":
            assert area[a] > 50 and area[b] == 0, where
        elif kind.startswith("rotating"):
            state = object_state(spec, action.actor, action.start)
            clockwise, counter = _quarter_turn_overlaps(frames[a], frames[b], COLOURS[actor.colour],
                                                        (state.x * w, state.y * h))
            turned, other = (clockwise, counter) if kind == "rotating clockwise" else (counter, clockwise)
            # a narrow shape turned about a centre rounded to the pixel overlaps itself less than a wide one, and
            # the lossy decode takes edge pixels off: seed 3's test_0035 triangle overlaps 0.56 as rendered, 0.50
            # decoded (the other turn: 0.32 and 0.34)
            assert turned > 0.45 and turned > other + 0.1, (where, clockwise, counter)
        elif kind == "bouncing":
            lowest = np.nanmin(centre[a:b + 1, 1])
            assert lowest < centre[a, 1] - 0.1 * h and abs(centre[b, 1] - centre[a, 1]) < 0.05 * h, where
        elif kind == "swapping places":
            partner = spec.objects[action.partner]
            other, _ = centroid_track(frames, COLOURS[partner.colour])
            assert np.hypot(*(centre[b] - other[a])) < 0.08 * w and np.hypot(*(other[b] - centre[a])) < 0.08 * w, where
    middle = _frame_at(times, (first.start + first.end) / 2)
    for obj in spec.objects:
        _, area = centroid_track(frames[middle:middle + 1], COLOURS[obj.colour])
        hidden = any(a.actor == spec.objects.index(obj) and a.action in ("appearing", "disappearing")
                     for a in spec.actions)
        assert hidden or area[0] > 30, f"{spec.name}: the {obj.name} is in view"


def test_ground_truth_matches_the_pixels(world: Path) -> None:
    specs = load_world(world)
    checked = 0
    for split in ("train", "test"):
        for spec in specs[split]:
            _check(spec, world / split / f"{spec.name}.mp4")
            checked += 1
    assert checked == CONFIG.train + CONFIG.test


@pytest.mark.parametrize("shape", ROTATING_SHAPES)
def test_a_rotating_shape_has_no_turn_symmetry(shape: str) -> None:
    """Turned by any multiple of 30 degrees the shape covers different pixels, so a quarter turn clockwise cannot
    also read as a smaller turn counter-clockwise (a near-equilateral triangle turned 90 degrees looks like one
    turned 30 degrees the other way, which left rotation direction unlearnable)."""
    def mask(angle: float) -> np.ndarray:
        spec = ClipSpec("shape", 144, 144, 10, 1.0, "noise", ((40, 40, 40), (70, 70, 70)),
                        (ObjectSpec(shape, "red", "large", 0.5, 0.5, angle),), (), 0)
        return object_masks(spec, 0, np.zeros(1))[0]

    upright = mask(0.0)
    assert upright.sum() > 300
    for angle in range(30, 360, 30):
        overlap = _iou(upright, mask(float(angle)))
        assert overlap < 0.6, (shape, angle, overlap)
