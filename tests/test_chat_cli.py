"""``fluxvid chat``: the interactive terminal chat, mounted as the lead mounts it, driven through stdin."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from chat import Projector, ProjectorInfo, save_projector
from chat.cli import app as chat_app
from tests.test_chat_support import QUESTION, ToyChat, answer_for, _one_torch_thread, toy_chat  # noqa: F401 (fixtures)

fluxvid = typer.Typer()
fluxvid.add_typer(chat_app)  # no name: `chat` joins the parent app as a command
fluxvid.command("version")(lambda: None)  # a second command, so that `chat` must be named as in the product
runner = CliRunner()
GREEDY = ["--temperature", "0", "--repetition-penalty", "1", "--max-new-tokens", "12"]


def test_help_lists_the_options() -> None:
    result = runner.invoke(fluxvid, ["chat", "--help"])
    assert result.exit_code == 0
    for option in ("--projector", "--llm", "--budget", "--session", "--start", "--end", "--temperature", "--top-p",
                   "--repetition-penalty", "--max-new-tokens"):
        assert option in result.output


def test_a_scripted_conversation(toy_chat: ToyChat) -> None:
    clip, colour = toy_chat.held_out[0]
    result = runner.invoke(fluxvid, ["chat", str(clip), "--projector", str(toy_chat.projector), *GREEDY],
                           input=f"{QUESTION}\n/settings\n/reset\n{QUESTION}\n/quit\n")
    assert result.exit_code == 0, result.output
    assert result.output.count(answer_for(colour)) == 2
    assert "16 video tokens (budget 128)" in result.output and "conversation cleared" in result.output


def test_a_conversation_continues_after_a_restart(toy_chat: ToyChat, tmp_path: Path) -> None:
    clip, colour = toy_chat.held_out[1]
    session = tmp_path / "talk.json"
    args = ["--projector", str(toy_chat.projector), "--session", str(session), *GREEDY]
    first = runner.invoke(fluxvid, ["chat", str(clip), "--start", "0.5", *args], input=f"{QUESTION}\n")
    assert first.exit_code == 0, first.output
    saved = json.loads(session.read_text())
    assert saved["history"][0]["answer"] == answer_for(colour) and saved["video"]["start"] == 0.5
    second = runner.invoke(fluxvid, ["chat", *args, "--max-new-tokens", "5"], input="Sure?\n")  # no VIDEO: resume
    assert second.exit_code == 0, second.output
    assert "1 earlier turns" in second.output
    saved = json.loads(session.read_text())
    assert [t["question"] for t in saved["history"]] == [QUESTION, "Sure?"]
    assert saved["settings"]["max_new_tokens"] == 5 and saved["settings"]["temperature"] == 0.0
    same = runner.invoke(fluxvid, ["chat", str(clip), *args], input="")
    assert same.exit_code == 0 and "2 earlier turns" in same.output
    other = runner.invoke(fluxvid, ["chat", str(toy_chat.held_out[0][0]), *args], input="")
    assert other.exit_code == 2 and f"is about {clip.resolve()}" in other.output


def test_errors_exit_non_zero_with_a_clear_message(toy_chat: ToyChat, tmp_path: Path) -> None:
    clip = str(toy_chat.held_out[0][0])
    projector = str(toy_chat.projector)
    cases = [
        (["chat", clip, "--projector", str(tmp_path / "p.safetensors")], "does not exist"),
        (["chat", clip, "--projector", projector, "--llm", str(tmp_path / "llm")], "LLM folder"),
        (["chat", str(tmp_path / "v.mp4"), "--projector", projector], "video"),
        (["chat", "--projector", projector], "give a VIDEO"),
        (["chat", clip, "--projector", projector, "--dtype", "int8"], "--dtype must be one of"),
        (["chat", clip, "--projector", projector, "--vision", "no_vit"], "neither a FluxViT checkpoint"),
    ]
    info = ProjectorInfo("linear", 384, 64, str(toy_chat.vit), "fluxvit_tiny_patch14", str(toy_chat.llm), 128, 4)
    wrong = save_projector(Projector("linear", 384, 64), info, tmp_path / "wrong.safetensors")
    cases.append((["chat", clip, "--projector", str(wrong)], "takes 384-d vision features"))
    for args, message in cases:
        result = runner.invoke(fluxvid, args)
        assert result.exit_code == 2, (args, result.output)
        assert "error:" in result.output and message in result.output, (args, result.output)
        assert "Traceback" not in result.output


def test_a_too_long_question_is_reported_and_the_chat_goes_on(toy_chat: ToyChat) -> None:
    clip, colour = toy_chat.held_out[0]
    result = runner.invoke(fluxvid, ["chat", clip.as_posix(), "--projector", str(toy_chat.projector), *GREEDY,
                                     "--max-context", "150"],
                           input="Tell me more about it. " * 30 + f"\n{QUESTION}\n")
    assert result.exit_code == 0, result.output
    assert "error: the prompt needs" in result.output and answer_for(colour) in result.output
