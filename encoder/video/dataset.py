"""A ``torch.utils.data`` dataset over annotations, and a loader that survives bad videos.

A video that fails to decode never crashes an epoch: the dataset returns a :class:`SkippedVideo` (index, path,
reason) in its place, :func:`skip_bad_collate` drops those from the batch and lists them under
``batch["skipped"]``, and :class:`VideoLoader` yields only the good samples while keeping every skip (with its
reason) in ``loader.skipped``. Batches can therefore be smaller than ``batch_size``; nothing is substituted.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, default_collate, get_worker_info
from tqdm import tqdm

from ..budget import Plan
from .annotations import Annotation
from .decode import DEFAULT_TIMEOUT
from .errors import VideoDecodeError
from .flexible import FlexibleSampler
from .load import load_clip, load_views
from .transforms import TrainAugment

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SkippedVideo:
    """A sample left out of its batch, and why."""

    index: int
    path: str
    reason: str


class VideoDataset(Dataset):
    """Clips (or test views) of annotated videos.

    ``plan``: a fixed :class:`~encoder.Plan`, or a :class:`FlexibleSampler` for flexi-sampling (drawn per item,
    or per batch when indexed with ``(index, plan)`` pairs from a batch sampler, as training does).
    ``augment``: training augmentation (random temporal offsets too); None evaluates (segment middles,
    ``clips x crops`` views when either is > 1).

    An item is a dict: ``video`` float32 ``[3, T, S, S]`` (``[V, 3, T, S, S]`` for views), ``timestamps``,
    ``label`` (-1 when absent), ``caption`` ("" when absent), ``start`` / ``end`` (NaN when absent), ``path``,
    ``index``; or a :class:`SkippedVideo` when the video cannot be decoded.
    """

    def __init__(
        self,
        items: Sequence[Annotation | str | Path],
        plan: Plan | FlexibleSampler,
        *,
        augment: TrainAugment | None = None,
        clips: int = 1,
        crops: int = 1,
        backend: str = "auto",
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        if augment is not None and clips * crops > 1:
            raise ValueError("multi-view (clips x crops) sampling is for evaluation; drop augment or use 1 x 1")
        self.items = [item if isinstance(item, Annotation) else Annotation(str(item)) for item in items]
        self.plan = plan
        self.augment = augment
        self.clips, self.crops = clips, crops
        self.backend, self.timeout = backend, timeout

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: int | tuple[int, Plan]) -> dict[str, Any] | SkippedVideo:
        index, plan = key if isinstance(key, tuple) else (key, None)
        if plan is None:
            plan = self.plan.draw() if isinstance(self.plan, FlexibleSampler) else self.plan
        item = self.items[index]
        # Inside a DataLoader worker, one decoder thread each: the workers are the parallelism.
        threads = 1 if get_worker_info() is not None else 0
        options = dict(backend=self.backend, timeout=self.timeout, threads=threads)
        try:
            if self.clips * self.crops > 1:
                clip = load_views(item.path, plan, self.clips, self.crops, item.start, item.end, **options)
            else:
                clip = load_clip(item.path, plan, item.start, item.end, augment=self.augment, **options)
        except VideoDecodeError as exc:
            log.warning("skipping %s (item %d): %s", item.path, index, exc.reason)
            return SkippedVideo(index, item.path, exc.reason)
        return dataset_item(item, index, clip.video, torch.from_numpy(clip.timestamps))


def dataset_item(item: Annotation, index: int, video: torch.Tensor, timestamps: torch.Tensor) -> dict[str, Any]:
    """The item dict every training and evaluation dataset returns (one layout for the collate functions)."""
    return {
        "video": video,
        "timestamps": timestamps,
        "label": -1 if item.label is None else item.label,
        "caption": item.caption or "",
        "negatives": list(item.negatives),
        "start": math.nan if item.start is None else item.start,
        "end": math.nan if item.end is None else item.end,
        "path": item.path,
        "index": index,
    }


def decode_once(dataset: Dataset, workers: int, desc: str, unit: str, progress: bool = True) -> list[Any]:
    """Every item of ``dataset`` (index order) fetched by ``workers`` processes, with a progress bar: what the
    training caches keep. Tensors are copied out of the workers' shared memory (thousands of shared tensors
    would exhaust file handles); a :class:`SkippedVideo` is kept as it is, for the caller to report."""
    loader = DataLoader(dataset, batch_size=None, num_workers=workers)
    entries: list[Any] = []
    for entry in tqdm(loader, total=len(dataset), desc=desc, unit=unit, disable=not progress, dynamic_ncols=True):
        if isinstance(entry, (list, tuple)):  # the loader hands a worker's tuple back as a list
            entry = tuple(part.clone() if isinstance(part, torch.Tensor) else part for part in entry)
        entries.append(entry)
    return entries


def skip_bad_collate(items: list[dict[str, Any] | SkippedVideo]) -> dict[str, Any]:
    """Collate the good samples; list the bad ones under ``"skipped"``.

    A batch whose samples all failed has only the ``"skipped"`` key.
    """
    good = [item for item in items if not isinstance(item, SkippedVideo)]
    batch: dict[str, Any] = {}
    if good:  # negatives: lists of different lengths, which default_collate cannot stack
        batch = default_collate([{k: v for k, v in item.items() if k != "negatives"} for item in good])
        batch["negatives"] = [item.get("negatives", []) for item in good]
    batch["skipped"] = [item for item in items if isinstance(item, SkippedVideo)]
    return batch


class VideoLoader:
    """A DataLoader over a :class:`VideoDataset` that skips bad videos, records why, and goes on.

    The dataset needs a fixed plan: flexible sampling draws one shape per batch, which training's batch sampler
    does. ``loader_options`` go to ``torch.utils.data.DataLoader`` (e.g. ``pin_memory``, ``timeout``).
    """

    def __init__(self, dataset: VideoDataset, batch_size: int = 1, num_workers: int = 0, shuffle: bool = False,
                 drop_last: bool = False, **loader_options: Any) -> None:
        self.dataset = dataset
        self.skipped: list[SkippedVideo] = []
        common = dict(num_workers=num_workers, collate_fn=skip_bad_collate, **loader_options)
        if isinstance(dataset.plan, FlexibleSampler):
            raise ValueError("a flexible plan gives every video its own shape, which cannot be batched; index the "
                             "dataset with (index, plan) batches from a batch sampler (training.data does)")
        self.loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, **common)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.loader:
            self.skipped.extend(batch.pop("skipped"))
            if "video" in batch:
                yield batch
