"""Shared by the benchmark scripts: print a Markdown table and save it with its data under bench/results/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

RESULTS = Path(__file__).resolve().parent / "results"


def save_table(name: str, machine: str, columns: Sequence[str], rows: Sequence[dict[str, Any]],
               note: str = "") -> str:
    """``rows`` are dicts keyed by ``columns``; writes results/NAME.md and results/NAME.json and prints."""
    lines = [f"Machine: {machine}" + (f"; {note}" if note else ""), "", "| " + " | ".join(columns) + " |",
             "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(f"{r[c]:,}" if isinstance(r[c], int) else str(r[c]) for c in columns) + " |"
              for r in rows]
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text)
    (RESULTS / f"{name}.json").write_text(json.dumps({"machine": machine, "note": note, "rows": list(rows)}, indent=2))
    print(text)
    return text
