"""Search over a built index: ranking equals brute force, filters act inside the search, moments merge,
query by video / segment, approximate index types, the command line and index-based retrieval evaluation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from index import VideoIndex, build_index
from index.store import SegmentRecord, Store
from retrieval.search import Searcher, SearchFilters, _merge
from tests.clips import sample_video
from tests.index_support import (COLOURS, load_model, make_library, solid_clip, tiny_dual_encoder, train_dual_encoder,
                                 write_manifest)

ROOT = Path(__file__).resolve().parents[1]
BUDGET, WINDOW = 64, 2.0

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("search")
    clips = make_library(root / "library")
    rows = [{"path": str(clips[name]), "title": f"the {name} clip", "caption": f"a {name} square",
             "tags": ["warm"] if name in ("red", "yellow") else ["cool"], "date": f"2024-0{i + 1}-01",
             "camera": f"cam{i}"} for i, name in enumerate(("red", "blue", "green", "yellow", "carphone"))]
    manifest = write_manifest(root / "library.jsonl", rows)
    model = tiny_dual_encoder(root / "dual.pt")
    build_index(manifest, root / "idx", model, BUDGET, window=WINDOW, num_workers=1, show_progress=False)
    index = VideoIndex.open(root / "idx")
    return {"root": root, "clips": clips, "manifest": manifest, "model": model, "index": index,
            "searcher": Searcher(index, load_model(model))}


def brute_force(library: dict, query: np.ndarray, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
    index = library["index"]
    ids, matrix = index.store.vectors(index.info.dim)
    scores = matrix @ query
    order = [i for i in np.argsort(-scores, kind="stable") if allowed is None or ids[i] in set(allowed.tolist())]
    return [(int(ids[i]), float(scores[i])) for i in order]


def text_vector(library: dict, text: str) -> np.ndarray:
    return library["searcher"].model.encode_text([text])[0].detach().numpy()


def test_a_trained_model_finds_the_clip_whose_content_matches(tmp_path: Path) -> None:
    """Trained on one set of clips, searched over another: the colour is what it learned, not the clip."""
    (tmp_path / "train").mkdir()
    (tmp_path / "library").mkdir()
    captions = {solid_clip(tmp_path / "train" / f"{name}.mp4", name, 2.0, seed=i): f"a {name} video"
                for i, name in enumerate(COLOURS)}
    captions[Path(shutil.copy(sample_video("carphone_pristine.mp4"), tmp_path / "train"))] = "a man on the phone"
    model = train_dual_encoder(tmp_path / "trained.pt", captions, BUDGET)
    held_out = {name: solid_clip(tmp_path / "library" / f"{name}.mp4", name, 2.5 + 1.5 * i, seed=20 + i)
                for i, name in enumerate(COLOURS)}
    for name in ("carphone_distorted.mp4", "bikes.mp4"):  # real videos as distractors
        shutil.copy(sample_video(name), tmp_path / "library")
    build_index(tmp_path / "library", tmp_path / "idx", model, BUDGET, window=WINDOW, num_workers=0,
                show_progress=False)
    searcher = Searcher(VideoIndex.open(tmp_path / "idx"), load_model(model))
    for name, path in held_out.items():
        found = searcher.search_text(f"a {name} video", k=2)
        assert found[0].path == str(path.resolve()), name
        assert found[0].score > found[1].score


def test_unmerged_text_search_is_the_exact_top_k(library: dict) -> None:
    moments = library["searcher"].search_text("a red square", k=6, merge=False)
    expected = brute_force(library, text_vector(library, "a red square"))[:6]
    assert [m.segment_id for m in moments] == [i for i, _ in expected]
    assert [m.score for m in moments] == pytest.approx([s for _, s in expected], abs=1e-5)
    page2 = library["searcher"].search_text("a red square", k=3, merge=False, offset=3)
    assert [m.segment_id for m in page2] == [i for i, _ in expected[3:6]]
    first = moments[0].to_dict()
    assert first["title"] and first["metadata"]["camera"].startswith("cam") and Path(first["thumbnail"]).is_file()


def test_filters_apply_inside_the_search(library: dict) -> None:
    searcher, query = library["searcher"], "a blue square"
    unfiltered = searcher.search_text(query, k=4, merge=False)
    other = "cool" if "warm" in unfiltered[0].tags else "warm"  # a tag that excludes the best unfiltered hit
    kept = searcher.search_text(query, k=4, merge=False, filters=SearchFilters(tags=(other,)))
    allowed = library["index"].allowed_ids(*SearchFilters(tags=(other,)).sql())
    assert [m.segment_id for m in kept] == [i for i, _ in brute_force(library, text_vector(library, query),
                                                                       allowed)[:4]]
    assert len(kept) == 4 and all(other in m.tags for m in kept), "k results although the top hits were excluded"
    assert unfiltered[0].segment_id not in {m.segment_id for m in kept}

    real = searcher.search_text(query, k=50, filters=SearchFilters(path_prefix=str(library["root"] / "library" /
                                                                                     "real")))
    assert real and {m.path for m in real} == {str(library["clips"]["carphone"].resolve())}
    long_only = searcher.search_text(query, k=50, merge=False, filters=SearchFilters(min_duration=5.5))
    assert {round(library["index"].segment(m.segment_id).duration) for m in long_only} == {6}
    march = datetime(2024, 3, 1, tzinfo=timezone.utc).timestamp()
    dated = searcher.search_text(query, k=50, filters=SearchFilters(after=march))
    assert {Path(m.path).stem for m in dated} == {"green", "yellow", "carphone"}
    assert searcher.search_text(query, k=5, filters=SearchFilters(tags=("nothing",))) == []


def test_neighbouring_hits_of_a_video_merge_into_one_moment() -> None:
    def record(i: int, start: float, end: float, whole: bool = False, path: str = "a.mp4") -> SegmentRecord:
        return SegmentRecord(i, 1, path, start, end, whole, None, None, None, (), {}, 8.0)

    records = {1: record(1, 0, 2), 2: record(2, 2, 4), 3: record(3, 6, 8), 4: record(4, 0, 8, True),
               5: record(5, 0, 2, path="b.mp4")}
    moments = _merge([(0.90, 1), (0.88, 2), (0.70, 3), (0.85, 4), (0.80, 5)], records)
    assert [(m.path, m.start, m.end, m.merged_segments) for m in moments] == [
        ("a.mp4", 0, 4, 3), ("b.mp4", 0, 2, 1), ("a.mp4", 6, 8, 1)]
    assert [m.score for m in moments] == [0.90, 0.80, 0.70]
    alone = _merge([(0.5, 4)], records)
    assert [(alone[0].start, alone[0].end)] == [(0, 8)], "a whole-video hit alone is the whole video"


def test_query_by_video_file_and_by_segment(library: dict) -> None:
    searcher, clips = library["searcher"], library["clips"]
    green = str(clips["green"].resolve())
    hits = searcher.search_video(clips["green"], k=3, merge=False)
    assert hits[0].path == green and hits[0].score == pytest.approx(1.0, abs=1e-3) and hits[0].start == 0
    segment = hits[0].segment_id
    similar = searcher.similar(segment, k=3)
    assert len(similar) == 3 and green not in {m.path for m in similar}
    expected = [i for i, _ in brute_force(library, library["index"].vector(segment))
                if library["index"].segment(i).path != green][0]
    assert similar[0].score == pytest.approx(float(library["index"].vector(segment) @
                                                   library["index"].vector(expected)), abs=1e-5)


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_approximate_indexes_answer_like_the_exact_one(library: dict, tmp_path: Path, kind: str) -> None:
    build_index(library["manifest"], tmp_path / kind, library["model"], BUDGET, window=WINDOW, index_type=kind,
                num_workers=0, show_progress=False)
    approximate = Searcher(VideoIndex.open(tmp_path / kind), load_model(library["model"]))
    assert list((tmp_path / kind).glob("vectors-*.faiss"))
    for clip in ("red", "carphone"):
        got = approximate.search_video(library["clips"][clip], k=1, merge=False)
        assert got[0].path == str(library["clips"][clip].resolve())
    assert approximate.search_text("a square", k=3, filters=SearchFilters(tags=("cool",)))


def fluxvid(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_search_command_prints_json_moments_and_fails_cleanly(library: dict) -> None:
    idx = str(library["root"] / "idx")
    done = fluxvid("search", idx, "a green square", "-k", "3", "--tag", "cool", "--json")
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    expected = library["searcher"].search_text("a green square", k=3, filters=SearchFilters(tags=("cool",)))
    assert [m["segment_id"] for m in printed] == [m.segment_id for m in expected]
    missing = fluxvid("search", str(library["root"] / "absent"), "x")
    assert missing.returncode == 2 and "no index here" in missing.stderr
    both = fluxvid("search", idx, "x", "--like-segment", "1")
    assert both.returncode == 2 and "exactly one" in both.stderr
    stats = fluxvid("index", "stats", idx, "--json")
    assert stats.returncode == 0 and json.loads(stats.stdout)["videos"] == 5


def test_eval_retrieval_on_an_index_equals_re_encoding(library: dict) -> None:
    captions = write_manifest(library["root"] / "captions.jsonl",
                              [{"path": str(p), "caption": f"a {name} square"} for name, p in library["clips"].items()])
    on_index = fluxvid("eval", "retrieval", "--data", str(captions), "--index", str(library["root"] / "idx"), "--json")
    assert on_index.returncode == 0, on_index.stderr
    encoded = fluxvid("eval", "retrieval", "--data", str(captions), "--model", str(library["model"]), "--budget",
                      str(BUDGET), "--workers", "0", "--json")
    assert encoded.returncode == 0, encoded.stderr
    a, b = json.loads(on_index.stdout), json.loads(encoded.stdout)
    assert [r["scoring"] for r in a] == ["plain", "dual softmax"] and a[0]["videos"] == 5
    for key in ("t2v/R@1", "t2v/R@5", "t2v/MdR", "v2t/R@1"):
        assert a[0][key] == pytest.approx(b[0][key]), key


def test_edited_manifest_metadata_is_stored_without_re_encoding(library: dict, tmp_path: Path) -> None:
    shutil.copytree(library["root"] / "idx", tmp_path / "idx")
    rows = [json.loads(line) for line in library["manifest"].read_text().splitlines()]
    rows[1] = {**rows[1], "tags": ["cool", "sky"], "title": "renamed", "camera": "drone"}
    manifest = write_manifest(tmp_path / "edited.jsonl", rows)
    generation = VideoIndex.open(tmp_path / "idx").store.generation
    report = build_index(manifest, tmp_path / "idx", library["model"], BUDGET, window=WINDOW, num_workers=0,
                         show_progress=False)
    assert (report.added, report.updated, report.unchanged, report.metadata_updated) == (0, 0, 5, 1)
    index = VideoIndex.open(tmp_path / "idx")
    assert index.store.generation == generation, "no vector changed"
    found = Searcher(index, load_model(library["model"])).search_text("x", k=5, filters=SearchFilters(tags=["sky"]))
    assert {m.path for m in found} == {str(library["clips"]["blue"].resolve())}
    assert found[0].title == "renamed" and found[0].metadata["camera"] == "drone"
    again = build_index(manifest, tmp_path / "idx", library["model"], BUDGET, window=WINDOW, show_progress=False)
    assert again.metadata_updated == 0


def test_an_open_index_follows_changes_made_beside_it(library: dict, tmp_path: Path) -> None:
    shutil.copytree(library["root"] / "idx", tmp_path / "idx")
    searcher = Searcher(VideoIndex.open(tmp_path / "idx"), load_model(library["model"]))
    red = str(library["clips"]["red"].resolve())
    assert searcher.search_video(red, k=1, merge=False)[0].path == red
    writer = Store(tmp_path / "idx")
    for gone in (red, str(library["clips"]["green"].resolve())):
        # a new generation without its FAISS file, as during a build; the second one comes within the reader's
        # rebuild gap, so the reader may answer from its older structure, which still holds the deleted segments
        writer.remove_paths([gone])
        after = searcher.search_video(gone, k=5, merge=False)
        assert len(after) == 5 and gone not in {m.path for m in after}, "deleted segments never come back as hits"
    writer.close()
    build_index(library["manifest"], tmp_path / "idx", library["model"], BUDGET, window=WINDOW, num_workers=0,
                show_progress=False)  # puts it back and writes the FAISS file of the new generation
    assert searcher.search_video(red, k=1, merge=False)[0].path == red
