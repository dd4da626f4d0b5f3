"""Annotation files, the dataset and the loader that skips bad videos (with worker processes)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from encoder import IMAGENET_MEAN, IMAGENET_STD, get_config, make_plan
from encoder.video import (Annotation, AnnotationError, FlexibleSampler, SkippedVideo, TrainAugment, VideoDataset,
                           VideoLoader, read_annotations, skip_bad_collate)
from tests.clips import frame_index, write_audio_only, write_clip, write_garbage

pytestmark = pytest.mark.timeout(120)

TINY = get_config("fluxvit_tiny_patch14")
PLAN = make_plan(TINY, 256, 4, 56)


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dataset")
    for i in range(4):
        write_clip(folder / f"good{i}.mp4", 40 + 10 * i, (96, 64), 20)
    write_garbage(folder / "random.mp4", 4000)
    write_audio_only(folder / "audio.m4a")
    return folder


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_csv_annotations(tmp_path) -> None:
    source = _write(tmp_path / "train.csv", "path,label,caption,start,end,extra\n"
                    "a.mp4,3,a dog runs,1.5,4,x\n"
                    "/abs/b.mp4,,,,,\n"
                    "\n"
                    "c.webm,0,\"commas, quoted\",0,2.5,y\n")
    rows = read_annotations(source)
    assert rows[0] == Annotation(str(tmp_path / "a.mp4"), 3, "a dog runs", 1.5, 4.0)
    assert rows[1] == Annotation("/abs/b.mp4")
    assert rows[2].caption == "commas, quoted" and rows[2].label == 0
    assert read_annotations(source, root="/videos")[0].path == "/videos/a.mp4"


def test_jsonl_annotations(tmp_path) -> None:
    lines = [{"path": "a.mp4", "label": 2, "caption": "x", "start": 0, "end": 3}, {"path": "b.mp4"}]
    source = _write(tmp_path / "val.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    rows = read_annotations(source)
    assert rows == [Annotation(str(tmp_path / "a.mp4"), 2, "x", 0.0, 3.0), Annotation(str(tmp_path / "b.mp4"))]


def test_jsonl_hard_negatives_are_read_in_order(tmp_path) -> None:
    lines = [{"path": "a.mp4", "caption": "a dog runs", "negatives": ["a dog sits", "a cat runs"]},
             {"path": "b.mp4", "caption": "a bird", "negatives": []}]
    rows = read_annotations(_write(tmp_path / "n.jsonl", "\n".join(json.dumps(x) for x in lines)))
    assert [r.negatives for r in rows] == [("a dog sits", "a cat runs"), ()]


@pytest.mark.parametrize("name, text, line, words", [
    ("a.csv", "video,label\nx.mp4,1\n", 1, "no 'path' column"),
    ("b.csv", "path,label\nx.mp4,1\ny.mp4,cat\n", 3, "label must be an integer"),
    ("c.csv", "path,start,end\nx.mp4,abc,3\n", 2, "start must be a number"),
    ("d.csv", "path,start,end\nx.mp4,1\nx.mp4,5,2\n", 3, "end (2) must be after start (5)"),
    ("e.csv", "path,label\nx.mp4,1,extra\n", 2, "more values than"),
    ("f.csv", "path,label\n,1\n", 2, "path is empty"),
    ("g.csv", "path,start\nx.mp4,-1\n", 2, ">= 0"),
    ("h.csv", "", 1, "no header"),
    ("i.jsonl", '{"path": "x.mp4"}\n{"path": "y.mp4", "label": 1.5}\n', 2, "label must be an integer"),
    ("j.jsonl", '{"path": "x.mp4"}\n\n{"label": 1}\n', 3, "no 'path' field"),
    ("k.jsonl", '{"path": "x.mp4"\n', 1, "not valid JSON"),
    ("l.jsonl", '["x.mp4"]\n', 1, "JSON object"),
    ("m.jsonl", '{"path": "x.mp4", "end": true}\n', 1, "end must be a number"),
    ("n.csv", "path,label\n", 1, "no annotations"),
    ("o.jsonl", '{"path": "x.mp4", "negatives": "a cat"}\n', 1, "negatives must be a JSON list"),
    ("p.jsonl", '{"path": "x.mp4", "negatives": ["a cat", ""]}\n', 1, "non-empty captions"),
    ("q.csv", "path,negatives\nx.mp4,a cat\n", 2, "negatives must be a JSON list"),
])
def test_annotation_errors_name_the_file_and_line(tmp_path, name: str, text: str, line: int, words: str) -> None:
    source = _write(tmp_path / name, text)
    with pytest.raises(AnnotationError) as caught:
        read_annotations(source)
    assert caught.value.line == line
    assert str(caught.value).startswith(f"{source}:{line}: ")
    assert words in str(caught.value)


def test_annotation_file_kind_and_existence(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        read_annotations(tmp_path / "none.csv")
    with pytest.raises(ValueError, match=".csv or .jsonl"):
        read_annotations(_write(tmp_path / "list.txt", "path\na.mp4\n"))


def test_dataset_items_carry_video_and_annotation(videos: Path) -> None:
    rows = [Annotation(str(videos / "good1.mp4"), 4, "a clip", 0.5, 2.0), str(videos / "good0.mp4")]
    dataset = VideoDataset(rows, PLAN)
    first, second = dataset[0], dataset[1]
    assert first["video"].shape == (3, 4, 56, 56)
    assert (first["label"], first["caption"], first["start"], first["end"]) == (4, "a clip", 0.5, 2.0)
    assert all(0.5 <= float(t) < 2.0 for t in first["timestamps"])
    assert second["label"] == -1 and second["caption"] == "" and math.isnan(second["start"])


def test_batches_keep_each_items_own_hard_negatives(videos: Path) -> None:
    rows = [Annotation(str(videos / "good0.mp4"), 0, "a", negatives=("b", "c")),
            Annotation(str(videos / "random.mp4"), 1, "x", negatives=("y",)),
            Annotation(str(videos / "good1.mp4"), 2, "d")]
    dataset = VideoDataset(rows, PLAN)
    batch = skip_bad_collate([dataset[i] for i in range(3)])  # lists of different lengths, one item skipped
    assert batch["negatives"] == [["b", "c"], []] and batch["label"].tolist() == [0, 2]


def test_bad_videos_are_skipped_with_their_reason(videos: Path) -> None:
    dataset = VideoDataset([videos / "good0.mp4", videos / "random.mp4", videos / "missing.mp4"], PLAN)
    skipped = dataset[1]
    assert isinstance(skipped, SkippedVideo) and skipped.index == 1
    assert skipped.path == str(videos / "random.mp4") and "invalid data" in skipped.reason.lower()
    batch = skip_bad_collate([dataset[0], dataset[1], dataset[2]])
    assert batch["video"].shape == (1, 3, 4, 56, 56)
    assert [s.index for s in batch["skipped"]] == [1, 2]
    assert skip_bad_collate([dataset[2]]) == {"skipped": [dataset[2]]}


def test_loader_with_workers_goes_on_past_bad_files(videos: Path) -> None:
    paths = [videos / "good0.mp4", videos / "random.mp4", videos / "good1.mp4", videos / "audio.m4a",
             videos / "missing.mp4", videos / "good2.mp4", videos / "good3.mp4"]
    loader = VideoLoader(VideoDataset([Annotation(str(p), i) for i, p in enumerate(paths)], PLAN),
                         batch_size=2, num_workers=2)
    batches = list(loader)
    labels = sorted(int(x) for b in batches for x in b["label"])
    assert labels == [0, 2, 5, 6]
    assert all(b["video"].shape[1:] == (3, 4, 56, 56) for b in batches)
    reasons = {Path(s.path).name: s.reason for s in loader.skipped}
    assert set(reasons) == {"random.mp4", "audio.m4a", "missing.mp4"}
    assert "no video stream" in reasons["audio.m4a"] and "does not exist" in reasons["missing.mp4"]
    # The frames are the ones the plan asked for (segment middles of a 40-frame video: 5, 15, 25, 35).
    first = next(b for b in batches if 0 in b["label"].tolist())
    row = first["label"].tolist().index(0)
    pixels = first["video"][row] * torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    pixels += torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
    assert [frame_index(pixels[:, t].numpy(), channels_first=True) for t in range(4)] == [5, 15, 25, 35]


def test_loader_refuses_a_per_video_flexible_plan(videos: Path) -> None:
    dataset = VideoDataset([videos / "good0.mp4"], FlexibleSampler(TINY), augment=TrainAugment())
    with pytest.raises(ValueError, match="cannot be batched"):
        VideoLoader(dataset, batch_size=2)


def test_multi_view_evaluation_dataset(videos: Path) -> None:
    dataset = VideoDataset([videos / "good2.mp4"], PLAN, clips=2, crops=3)
    item = dataset[0]
    assert item["video"].shape == (6, 3, 4, 56, 56) and item["timestamps"].shape == (2, 4)
    with pytest.raises(ValueError, match="evaluation"):
        VideoDataset([videos / "good2.mp4"], PLAN, clips=2, augment=TrainAugment())
