"""``fluxvid chat VIDEO --projector FILE``: an interactive terminal chat about a video.

Mount with ``app.add_typer(chat.cli.app)`` (no name: the ``chat`` command joins the parent app).
"""

from __future__ import annotations

from pathlib import Path

import torch
import typer
from rich.console import Console
from transformers.utils.logging import disable_progress_bar

from encoder.checkpoint import CheckpointError
from encoder.cli import fail
from encoder.video import VideoDecodeError

from .errors import ChatError
from .generation import GenerationSettings
from .model import ChatModel
from .prompt import DEFAULT_SYSTEM_PROMPT
from .session import Session

app = typer.Typer(help="Chat about a video: FluxViT -> projector -> LLM.", pretty_exceptions_enable=False)
console = Console()
errors = Console(stderr=True)
_DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_HELP = "commands: /reset (forget the conversation), /save FILE, /settings, /help, /quit (or Ctrl-D)"
_FAILURES = (ChatError, CheckpointError, VideoDecodeError, ValueError)


def _same_source(given: str, recorded: str) -> bool:
    path = Path(given).expanduser()
    return given == recorded or (path.exists() and str(path.resolve()) == recorded)


def _settings(base: GenerationSettings, **given: float | int | None) -> GenerationSettings:
    values = {**base.to_dict(), **{k: v for k, v in given.items() if v is not None}}
    return GenerationSettings(**values)


def _open_session(
    model: ChatModel, video: Path | None, start: float | None, end: float | None, session_file: Path | None,
    system_prompt: str, max_context: int | None, **generation: float | int | None,
) -> Session:
    if session_file is not None and session_file.exists():
        session = Session.restore(session_file, model)
        if video is not None and (session.video is None or Path(session.video.path) != video.resolve()):
            fail(f"session {session_file} is about {session.video.path if session.video else 'no video'}; "
                  f"omit VIDEO to continue it, or use another --session file")
        session.settings = _settings(session.settings, **generation)
        return session
    if video is None:
        fail("give a VIDEO (or --session FILE of a saved conversation)")
    session = Session(model, _settings(GenerationSettings(), **generation), system_prompt, max_context)
    session.load_video(video, start, end)
    return session


def _converse(session: Session, session_file: Path | None) -> None:
    while True:
        try:
            question = console.input("[bold green]you>[/bold green] ").strip()
        except (EOFError, KeyboardInterrupt):
            console.print()
            return
        if not question:
            continue
        if question in ("/quit", "/exit"):
            return
        if question == "/help":
            console.print(_HELP)
            continue
        if question == "/settings":
            console.print(session.settings.to_dict())
            continue
        if question == "/reset":
            session.reset()
            console.print("[dim]conversation cleared (the video stays)[/dim]")
        elif question.startswith("/save"):
            target = question.removeprefix("/save").strip()
            if not target:
                console.print("usage: /save FILE")
                continue
            console.print(f"[dim]saved to {session.save(target)}[/dim]")
            continue
        elif question.startswith("/"):
            console.print(f"unknown command {question.split()[0]}; {_HELP}")
            continue
        else:
            _answer(session, question)
        if session_file is not None:
            session.save(session_file)


def _answer(session: Session, question: str) -> None:
    try:
        stream = session.ask(question)
    except ChatError as exc:
        errors.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        return
    console.print("[bold blue]fluxvid>[/bold blue] ", end="")
    try:
        for piece in stream:
            typer.echo(piece, nl=False)
    except KeyboardInterrupt:  # the answer so far stays in the history
        typer.echo(" [stopped]", nl=False)
    typer.echo()


@app.command("chat")
def chat_command(
    video: Path | None = typer.Argument(None, help="Video file to talk about (omit to continue --session)."),
    projector: Path = typer.Option(..., "--projector", help="Projector file written by `fluxvid train chat`."),
    llm: str | None = typer.Option(None, "--llm", help="LLM folder (or hub id when online); default: the "
                                                       "projector's."),
    budget: int | None = typer.Option(None, "--budget", min=1, help="Vision token budget; default: the "
                                                                    "projector's."),
    vision: str | None = typer.Option(None, "--vision", help="FluxViT checkpoint; default: the projector's."),
    start: float | None = typer.Option(None, "--start", min=0, help="Segment start (seconds)."),
    end: float | None = typer.Option(None, "--end", min=0, help="Segment end (seconds)."),
    session_file: Path | None = typer.Option(None, "--session", help="Save the conversation here after every "
                                             "answer; if the file exists, continue it (its video, window, system "
                                             "prompt, history and settings; given settings override)."),
    max_new_tokens: int | None = typer.Option(None, min=1, help="Answer length limit [default: 512]."),
    temperature: float | None = typer.Option(None, min=0, help="0 = greedy [default: 0.7]."),
    top_p: float | None = typer.Option(None, min=0, max=1, help="[default: 0.8]"),
    repetition_penalty: float | None = typer.Option(None, min=0, help="[default: 1.05]"),
    max_context: int | None = typer.Option(None, min=16, help="Context limit in tokens; default: the LLM's."),
    system_prompt: str = typer.Option(DEFAULT_SYSTEM_PROMPT, help="System message."),
    device: str = typer.Option("auto", help="auto (CUDA when available), cpu, cuda, cuda:1..."),
    dtype: str = typer.Option("auto", help="LLM dtype: auto (the checkpoint's), float32, bfloat16, float16."),
) -> None:
    """Ask questions about a video (or the --start/--end segment of it); answers stream as they are written."""
    if dtype not in _DTYPES:
        fail(f"--dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    if video is not None and not video.is_file():
        fail(f"video {video} does not exist")
    target = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    disable_progress_bar()  # the spinner says what is loading
    try:
        with console.status("loading the ViT, projector and LLM..."):
            model = ChatModel.load(projector, llm=llm, vision=vision, budget=budget, device=target,
                                   dtype=_DTYPES[dtype])
        if llm is not None and not _same_source(llm, model.info.llm):
            console.print(f"[yellow]note:[/yellow] the projector was trained with LLM {model.info.llm}")
        with console.status("encoding the video..."):
            session = _open_session(model, video, start, end, session_file, system_prompt, max_context,
                                    max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                    repetition_penalty=repetition_penalty)
    except _FAILURES as exc:
        fail(str(exc))
    context = session.context
    assert context is not None and session.video is not None
    console.print(f"[dim]{session.video.path}: {context.duration:.1f} s, {len(context.timestamps)} frames, "
                  f"{model.num_video_tokens} video tokens (budget {model.vision.plan.budget}); "
                  f"{len(session.history)} earlier turns. {_HELP}[/dim]", highlight=False, soft_wrap=True)
    try:
        _converse(session, session_file)
    except _FAILURES as exc:
        fail(str(exc))
