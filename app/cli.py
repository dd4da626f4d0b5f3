"""The ``fluxvid`` command: one entry point, a sub-command group per product area."""

from __future__ import annotations

import os

# The app runs offline: no hub downloads, no telemetry, unless the user explicitly opts in.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import typer  # noqa: E402

from chat.cli import app as chat_app  # noqa: E402
from encoder.cli import app as encoder_app  # noqa: E402
from index.cli import app as index_app  # noqa: E402
from index.cli import search  # noqa: E402
from retrieval.cli import app as retrieval_app  # noqa: E402
from .demo.cli import app as demo_app  # noqa: E402
from .serve_cli import serve_command  # noqa: E402
from training.cli import app as train_app  # noqa: E402
from training.cli import eval_app  # noqa: E402

app = typer.Typer(help="FluxVid: video search, classification and chat at any compute budget.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(encoder_app, name="encoder")
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")
app.add_typer(chat_app)
app.add_typer(retrieval_app, name="retrieval")
app.add_typer(index_app, name="index")
app.command("search")(search)
app.command("serve")(serve_command)
app.add_typer(demo_app, name="demo")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
