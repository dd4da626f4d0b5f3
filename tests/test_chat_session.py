"""Sessions: streamed answers, history and its context guard, reset, independence, save / restore."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chat import ChatModel, GenerationSettings, Session
from chat.errors import ChatError, PromptTooLongError, SessionFileError
from tests.test_chat_support import QUESTION, ToyChat, answer_for, _one_torch_thread, toy_chat  # noqa: F401 (fixtures)

GREEDY = GenerationSettings(max_new_tokens=12, temperature=0.0, repetition_penalty=1.0)


@pytest.fixture(scope="module")
def model(toy_chat: ToyChat) -> ChatModel:
    return ChatModel.load(toy_chat.projector)


def _session(model: ChatModel, toy_chat: ToyChat, index: int = 0, **kwargs) -> tuple[Session, str]:
    clip, colour = toy_chat.held_out[index]
    session = Session(model, kwargs.pop("settings", GREEDY), **kwargs)
    session.load_video(clip)
    return session, colour


def test_answers_stream_piece_by_piece(model: ChatModel, toy_chat: ToyChat) -> None:
    session, colour = _session(model, toy_chat)
    pieces = list(session.ask(QUESTION))
    assert len(pieces) >= 3 and "".join(pieces) == answer_for(colour)
    assert session.history[-1].answer == answer_for(colour)
    stream = session.ask(QUESTION)
    first = next(stream)  # text arrives before the answer is complete ...
    stream.close()  # ... and stopping there keeps what was said
    assert first == pieces[0] and session.history[-1].answer == first.strip()
    assert len(session.history) == 2


def test_history_is_kept_across_turns(model: ChatModel, toy_chat: ToyChat) -> None:
    session, colour = _session(model, toy_chat)
    session.chat(QUESTION)
    ids = session.prompt_ids("Tell me more about it.")
    text = model.tokenizer.decode(ids)
    assert text.count(QUESTION) == 1 and answer_for(colour) in text and text.endswith(
        "Tell me more about it.<|im_end|>\n<|im_start|>assistant\n")
    session.chat("Tell me more about it.")
    assert [t.question for t in session.history] == [QUESTION, "Tell me more about it."]


def test_context_guard_trims_old_turns_and_keeps_the_video(model: ChatModel, toy_chat: ToyChat) -> None:
    session, _ = _session(model, toy_chat, max_context=200)
    for index in range(8):
        session.chat(f"Which one? {index}")
        ids = session.prompt_ids("How many frames?")
        assert len(ids) + GREEDY.max_new_tokens <= 200
        assert ids.count(model.video_id) == model.num_video_tokens
    assert 1 <= len(session.history) < 8
    assert session.history[-1].question == "Which one? 7"  # the newest turns survive
    with pytest.raises(PromptTooLongError, match=r"the prompt needs \d+ tokens \(16 of them for the video\)"):
        session.prompt_ids("Tell me more about it. " * 40)
    assert session.history == []  # everything was trimmed trying to fit it


def test_reset_keeps_the_video(model: ChatModel, toy_chat: ToyChat) -> None:
    session, colour = _session(model, toy_chat)
    session.chat(QUESTION)
    session.reset()
    assert session.history == [] and session.chat(QUESTION) == answer_for(colour)


def test_sessions_do_not_share_state(model: ChatModel, toy_chat: ToyChat) -> None:
    first, first_colour = _session(model, toy_chat, 0)
    second, second_colour = _session(model, toy_chat, 1, settings=GenerationSettings(temperature=0.0,
                                                                                       max_new_tokens=3))
    assert first_colour != second_colour
    stream = first.ask(QUESTION)
    next(stream)
    assert second.chat(QUESTION) != answer_for(first_colour)  # interleaved with the first stream
    rest = "".join(stream)
    assert first.history[-1].answer == answer_for(first_colour) and rest
    assert len(first.history) == len(second.history) == 1
    first.settings.max_new_tokens = 7
    assert second.settings.max_new_tokens == 3 and GREEDY.max_new_tokens == 12


def test_sampling_settings_and_their_validation(model: ChatModel, toy_chat: ToyChat) -> None:
    session, _ = _session(model, toy_chat, settings=GenerationSettings(max_new_tokens=6, temperature=1.3,
                                                                       top_p=0.9, repetition_penalty=1.2))
    assert isinstance(session.chat(QUESTION), str)
    with pytest.raises(ValueError, match="top_p must be in"):
        GenerationSettings(top_p=0.0)
    with pytest.raises(ChatError, match="no video loaded"):
        Session(model).ask(QUESTION)


def test_a_segment_of_a_video(model: ChatModel, toy_chat: ToyChat) -> None:
    session = Session(model, GREEDY)
    context = session.load_video(toy_chat.held_out[0][0], start=0.5, end=1.5)
    assert (context.start, context.end, context.duration) == (0.5, 1.5, 1.0)
    assert all(0.5 <= t < 1.5 for t in context.timestamps)
    assert "segment from 0.5s to 1.5s" in model.tokenizer.decode(session.prompt_ids(QUESTION))


def test_a_session_survives_save_and_restore(model: ChatModel, toy_chat: ToyChat, tmp_path: Path) -> None:
    settings = GenerationSettings(max_new_tokens=12, temperature=0.0, top_p=0.5, repetition_penalty=1.0)
    session, colour = _session(model, toy_chat, 2, settings=settings, system_prompt="Answer briefly.",
                               max_context=400)
    session.load_video(toy_chat.held_out[2][0], start=0.0, end=1.5)
    session.chat(QUESTION)
    session.chat("Sure?")
    path = session.save(tmp_path / "chats" / "s.json")
    assert not list(path.parent.glob("*.tmp"))
    restarted = ChatModel.load(toy_chat.projector)  # as after a restart: a new process loads everything again
    restored = Session.restore(path, restarted)
    assert restored.history == session.history and restored.settings == settings
    assert (restored.system_prompt, restored.max_context, restored.video) == ("Answer briefly.", 400, session.video)
    assert restored.prompt_ids("Which one?") == session.prompt_ids("Which one?")
    assert restored.chat("Which one?") == session.chat("Which one?")
    session.save(path)  # overwriting keeps a whole file
    assert json.loads(path.read_text())["history"][-1]["question"] == "Which one?"


def test_restore_errors_name_the_file(model: ChatModel, toy_chat: ToyChat, tmp_path: Path) -> None:
    with pytest.raises(SessionFileError, match="does not exist"):
        Session.restore(tmp_path / "none.json", model)
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "fluxvid-chat-session", "version": 1, "hist')
    with pytest.raises(SessionFileError, match=f"{bad} is not readable JSON"):
        Session.restore(bad, model)
    bad.write_text('{"some": "thing"}')
    with pytest.raises(SessionFileError, match="not a FluxVid chat session"):
        Session.restore(bad, model)
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(toy_chat.held_out[0][0].read_bytes())
    session, _ = _session(model, toy_chat)
    session.load_video(clip)
    saved = session.save(tmp_path / "s.json")
    clip.unlink()
    with pytest.raises(SessionFileError, match="its video cannot be loaded again.*file does not exist"):
        Session.restore(saved, model)
