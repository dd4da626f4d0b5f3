"""The demo LM's tokenizer: fitted to the world's text, frame times as single tokens, loaded exactly as saved."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from app.demo.llm import build_llm, corpus
from chat.errors import LLMNotFoundError
from chat.llm import VIDEO_TOKEN, load_tokenizer
from chat.prompt import VideoContext

CONVERSATIONS = [
    [("What colour is the object that moves left?", "red"), ("How many objects are there?", "two")],
    [("What does the blue circle do?", "rotates clockwise"), ("Describe the video.", "a small blue circle rotates")],
]
DURATIONS = [4.0 + 0.37 * i for i in range(60)]


@pytest.fixture(scope="module")
def demo_llm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("llm")
    chats = root / "train_chat.jsonl"
    chats.write_text("".join(json.dumps({"path": f"c{i}.mp4", "conversations": [
        {"role": role, "content": text} for question, answer in turns
        for role, text in (("user", question), ("assistant", answer))]}) + "\n"
        for i, turns in enumerate(CONVERSATIONS * 20)))
    return build_llm(root / "llm", corpus([chats], DURATIONS), seed=0, hidden=32, layers=1, heads=2)


def test_a_plain_tokenizer_beside_a_qwen2_config_loads_as_saved(demo_llm: Path) -> None:
    """transformers would rebuild it as Qwen2Tokenizer (digits one by one); it must split as it was trained."""
    assert json.loads((demo_llm / "config.json").read_text())["model_type"] == "qwen2"
    saved = Tokenizer.from_file(str(demo_llm / "tokenizer.json"))
    loaded = load_tokenizer(demo_llm)
    for text in ("The video lasts 5.1 seconds. 16 frames were sampled at 0.2s, 0.5s, 0.8s.",
                 "How many objects are there? 3.14159 Ünïcode"):
        assert loaded.tokenize(text) == saved.encode(text, add_special_tokens=False).tokens


def test_frame_times_are_single_tokens_and_any_text_round_trips(demo_llm: Path) -> None:
    tokenizer = load_tokenizer(demo_llm)
    duration = DURATIONS[7]
    times = tuple(round((i + 0.5) * duration / 16, 1) for i in range(16))
    description = VideoContext(duration, times).describe()
    pieces = tokenizer.tokenize(description)
    assert [piece for piece in pieces if piece.rstrip(",").endswith("s") and "." in piece] == [
        f"Ġ{t:.1f}s," for t in times[:-1]] + [f"Ġ{times[-1]:.1f}s"]
    assert pieces[0] == VIDEO_TOKEN and len(pieces) < 40
    for text in (description, "What colour is the object that moves left?", "qué color tiene 🎥 a las 12.34s?"):
        assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_an_unreadable_tokenizer_config_is_reported_with_the_folder(demo_llm: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken_llm"
    shutil.copytree(demo_llm, broken)
    (broken / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(LLMNotFoundError, match="cannot load the tokenizer of LLM .*broken_llm"):
        load_tokenizer(broken)
