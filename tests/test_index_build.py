"""Index building over real clips: contents, incremental runs, bad files, model mismatch, kill-and-resume, shards."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from encoder import plan
from encoder.video import load_clip, probe, segments
from index import IndexStoreError, VideoIndex, build_index, merge_indexes, parse_shard, shard_folder
from retrieval.search import Searcher
from tests.index_support import coloured_clip, load_model, make_library, tiny_dual_encoder, write_manifest

ROOT = Path(__file__).resolve().parents[1]
BUDGET, WINDOW = 64, 2.0

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Path], object]:
    root = tmp_path_factory.mktemp("index")
    clips = make_library(root / "library")
    model = tiny_dual_encoder(root / "dual.pt")
    report = build_index(root / "library", root / "idx", model, BUDGET, window=WINDOW, num_workers=1,
                         batch_size=4, show_progress=False)
    return root, model, clips, report


def stored(index_dir: Path) -> dict[tuple[str, float, float], np.ndarray]:
    """Every segment's vector by (path, start, end): what a build produced, whatever the ids."""
    index = VideoIndex.open(index_dir)
    ids, matrix = index.store.vectors(index.info.dim)
    records = index.segments(ids.tolist())
    result = {(records[i].path, records[i].start, records[i].end): matrix[n] for n, i in enumerate(ids.tolist())}
    index.close()
    return result


def test_every_video_is_split_encoded_and_thumbnailed(built) -> None:
    root, model_path, clips, report = built
    stats = VideoIndex.open(root / "idx").stats()
    assert stats.videos == 5 and report.added == 5 and report.unchanged == 0
    assert [s.path for s in stats.skipped] == [str((root / "library" / "broken.mp4").resolve())]
    assert stats.skipped[0].reason
    expected = {str(p.resolve()): segments(probe(p).duration, WINDOW, WINDOW) for p in clips.values()}
    assert stats.segments == sum(len(s) for s in expected.values())
    vectors = stored(root / "idx")
    assert {(p, s.start, s.end) for p, segs in expected.items() for s in segs} == set(vectors)

    # a stored vector is exactly the dual encoder's embedding of that segment at the index's plan
    model = load_model(model_path)
    red = str(clips["red"].resolve())
    window = next(s for s in expected[red] if not s.whole)
    video_plan = plan(BUDGET, model.vision.config)
    clip = load_clip(red, video_plan, window.start, window.end)
    with torch.no_grad():
        direct = model.encode_video(clip.video[None], keep_tokens=video_plan.keep_tokens, head=video_plan.head)
    assert np.allclose(vectors[(red, window.start, window.end)], direct[0].numpy(), atol=1e-5)
    assert np.allclose(np.linalg.norm(np.stack(list(vectors.values())), axis=1), 1.0, atol=1e-5)

    index = VideoIndex.open(root / "idx")
    ids = index.allowed_ids("v.status = 'ok'", [])
    thumbs = [index.segment(int(i)).thumbnail for i in ids]
    assert all(t is not None and t.is_file() for t in thumbs)
    with Image.open(thumbs[0]) as image:
        assert image.format == "JPEG" and max(image.size) <= 160


def test_second_run_changes_nothing_and_bad_files_wait_for_a_change(built, tmp_path: Path) -> None:
    root, model, _, _ = built
    shutil.copytree(root / "idx", tmp_path / "idx")
    before = stored(tmp_path / "idx")
    again = build_index(root / "library", tmp_path / "idx", model, BUDGET, window=WINDOW, num_workers=0,
                        show_progress=False)
    assert (again.added, again.updated, again.removed, again.unchanged) == (0, 0, 0, 6)
    assert len(again.skipped) == 1, "the broken file stays listed without being retried"
    after = stored(tmp_path / "idx")
    assert after.keys() == before.keys() and all(np.array_equal(after[k], before[k]) for k in before)


def test_incremental_add_change_delete(built, tmp_path: Path) -> None:
    root, model, _, _ = built
    library = tmp_path / "library"
    shutil.copytree(root / "library", library)
    first = build_index(library, tmp_path / "idx", model, BUDGET, window=WINDOW, num_workers=0, show_progress=False)
    assert first.added == 5
    index = VideoIndex.open(tmp_path / "idx")
    untouched_ids = index.allowed_ids("v.path = ?", [str((library / "green.mp4").resolve())]).tolist()
    index.close()

    coloured_clip(library / "new.mp4", "red", seconds=2.5, seed=7)
    time.sleep(0.01)
    coloured_clip(library / "blue.mp4", "yellow", seconds=4.0, seed=9)  # same name, other content
    (library / "red.mp4").unlink()
    coloured_clip(library / "broken.mp4", "green", seconds=2.0, seed=5)  # the bad file is fixed
    second = build_index(library, tmp_path / "idx", model, BUDGET, window=WINDOW, num_workers=0,
                         show_progress=False)
    assert (second.added, second.updated, second.removed, second.unchanged) == (1, 2, 1, 3)
    assert second.skipped == []
    index = VideoIndex.open(tmp_path / "idx")
    paths = {index.segment(int(i)).path for i in index.allowed_ids("1 = 1", [])}
    assert str((library / "red.mp4").resolve()) not in paths and str((library / "new.mp4").resolve()) in paths
    assert index.allowed_ids("v.path = ?", [str((library / "green.mp4").resolve())]).tolist() == untouched_ids, \
        "an unchanged video keeps its rows: it was not re-encoded"
    blue = index.allowed_ids("v.path = ? AND s.whole = 1", [str((library / "blue.mp4").resolve())])
    assert index.segment(int(blue[0])).end == pytest.approx(probe(library / "blue.mp4").duration, abs=0.2)
    assert not any((tmp_path / "idx" / "thumbs").glob("*.tmp"))


def test_missing_and_touched_files_do_not_churn_the_index(built, tmp_path: Path) -> None:
    root, model, clips, _ = built
    red, gone = Path(shutil.copy(clips["red"], tmp_path / "red.mp4")), tmp_path / "gone.mp4"
    only_gone = write_manifest(tmp_path / "gone.jsonl", [{"path": str(gone)}])
    empty = build_index(only_gone, tmp_path / "empty", model, BUDGET, index_type="ivfpq", show_progress=False)
    assert empty.segments == 0 and [s.reason for s in empty.skipped] == ["the file does not exist"]
    assert VideoIndex.open(tmp_path / "empty").search(np.ones((1, 32), np.float32), 3)[1].tolist() == [[-1] * 3]

    manifest = write_manifest(tmp_path / "m.jsonl", [{"path": str(red)}, {"path": str(gone)}])
    first = build_index(manifest, tmp_path / "idx", model, BUDGET, window=WINDOW, index_type="ivfpq", num_workers=0,
                        show_progress=False)
    assert first.added == 1 and [(s.path, s.reason) for s in first.skipped] == [(str(gone), "the file does not exist")]
    generation = VideoIndex.open(tmp_path / "idx").store.generation
    touched = red.stat().st_mtime + 100
    os.utime(red, (touched, touched))
    second = build_index(manifest, tmp_path / "idx", model, BUDGET, window=WINDOW, index_type="ivfpq",
                         num_workers=0, show_progress=False)
    assert (second.added, second.updated, second.removed, second.unchanged) == (0, 0, 0, 1)
    assert [s.path for s in second.skipped] == [str(gone)]
    index = VideoIndex.open(tmp_path / "idx")
    assert index.store.generation == generation, "nothing changed, so the vectors keep their generation"
    assert index.store.videos()[str(red.resolve())].mtime == touched, "the next run takes the fast path"
    ids = index.allowed_ids("1 = 1", [])
    assert index.search(index.vector(int(ids[0]))[None], 1)[1][0][0] == ids[0]


def test_another_model_is_refused(built, tmp_path: Path) -> None:
    root, _, _, _ = built
    other = tiny_dual_encoder(tmp_path / "other.pt", seed=1)
    shutil.copytree(root / "idx", tmp_path / "idx")
    with pytest.raises(IndexStoreError, match="was built with model"):
        build_index(root / "library", tmp_path / "idx", other, BUDGET, window=WINDOW, show_progress=False)
    with pytest.raises(IndexStoreError, match="was built with budget"):
        build_index(root / "library", tmp_path / "idx", root / "dual.pt", 128, window=WINDOW, show_progress=False)
    with pytest.raises(IndexStoreError, match="was built with model"):
        Searcher(VideoIndex.open(tmp_path / "idx"), load_model(other))
    with pytest.raises(IndexStoreError, match="no index here"):
        VideoIndex.open(tmp_path / "nothing")


def test_a_build_killed_mid_way_leaves_a_consistent_index_and_resumes(built, tmp_path: Path) -> None:
    root, model, _, _ = built
    library = tmp_path / "library"
    library.mkdir()
    for i in range(10):
        coloured_clip(library / f"clip{i:02d}.mp4", ["red", "blue", "green", "yellow"][i % 4], seconds=6.0, seed=i)
    command = [sys.executable, "-m", "app.cli", "index", "build", str(library), "--index", str(tmp_path / "idx"),
               "--model", str(model), "--budget", str(BUDGET), "--window", "1", "--workers", "0",
               "--batch-size", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    database = tmp_path / "idx" / "index.sqlite"
    committed = 0
    deadline = time.monotonic() + 240
    while committed < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
        if database.exists():
            try:
                with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as db:
                    committed = db.execute("SELECT COUNT(*) FROM videos").fetchone()[0]
            except sqlite3.OperationalError:
                continue
    process.send_signal(signal.SIGKILL)
    process.wait()
    index = VideoIndex.open(tmp_path / "idx")  # readable, and its FAISS file rebuilt from SQLite
    stats = index.stats()
    assert 2 <= stats.videos < 10, "killed part-way"
    per_video = {index.segment(int(i)).path for i in index.allowed_ids("1 = 1", [])}
    assert len(per_video) == stats.videos, "only whole videos are ever committed"
    assert all(len(segments(6.0, 1.0)) - 1 <= len(index.allowed_ids("v.path = ?", [p])) for p in per_video)
    scores, ids = index.search(index.vector(int(index.allowed_ids("1 = 1", [])[0]))[None], 3)
    assert ids[0][0] >= 0 and scores[0][0] == pytest.approx(1.0, abs=1e-4)
    index.close()

    resumed = build_index(library, tmp_path / "idx", model, BUDGET, window=1.0, batch_size=2, num_workers=0,
                          show_progress=False)
    assert resumed.unchanged == stats.videos and resumed.added == 10 - stats.videos
    clean = build_index(library, tmp_path / "clean", model, BUDGET, window=1.0, batch_size=2, num_workers=0,
                        show_progress=False)
    a, b = stored(tmp_path / "idx"), stored(tmp_path / "clean")
    assert a.keys() == b.keys() and all(np.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert clean.segments == resumed.segments


def test_shards_merged_equal_a_single_build(built, tmp_path: Path) -> None:
    root, model, _, _ = built
    parts = [parse_shard("auto", {"RANK": str(rank), "WORLD_SIZE": "2"}) for rank in range(2)]  # as torchrun
    assert parts == [(0, 2), (1, 2)] and parse_shard("1/2") == (1, 2)
    reports = [build_index(root / "library", shard_folder(tmp_path / "shard{rank}", part), model, BUDGET,
                           window=WINDOW, shard=part, num_workers=0, show_progress=False) for part in parts]
    assert sum(r.added for r in reports) == 5 and all(r.added for r in reports), "both shards got work"
    (tmp_path / "merged.merging").mkdir()
    (tmp_path / "merged.merging" / "index.sqlite").write_bytes(b"what a killed merge left")
    merged = merge_indexes(tmp_path / "merged", [tmp_path / "shard0", tmp_path / "shard1"], show_progress=False)
    assert not (tmp_path / "merged.merging").exists()
    assert merged.added == 5 and len(merged.skipped) == 1
    single, combined = stored(root / "idx"), stored(tmp_path / "merged")
    assert single.keys() == combined.keys()
    assert all(np.allclose(single[k], combined[k], atol=1e-5) for k in single)
    index = VideoIndex.open(tmp_path / "merged")
    assert all(index.segment(int(i)).thumbnail.is_file() for i in index.allowed_ids("1 = 1", []))
    with pytest.raises(IndexStoreError, match="already holds an index"):
        merge_indexes(tmp_path / "merged", [tmp_path / "shard0"], show_progress=False)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(IndexStoreError, match="not empty"):
        merge_indexes(tmp_path / "taken", [tmp_path / "shard0"], show_progress=False)
    for bad in ("2/2", "a/b", "3"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)
    with pytest.raises(ValueError, match="RANK and WORLD_SIZE"):
        parse_shard("auto", {})
