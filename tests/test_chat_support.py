"""Builders shared by the chat tests (no tests here): a small byte-level BPE tokenizer with a Qwen-style chat
template, a tiny Qwen2 taught the answer format on text, solid-colour clips, and a tiny FluxViT checkpoint.

Everything is built on the fly and saved to folders that the product then loads through its normal paths.
"""

from __future__ import annotations

import json
import random
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import av
import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from chat.llm import QWEN_CHAT_TEMPLATE, prepare_tokenizer, video_token_id
from chat.prompt import DEFAULT_SYSTEM_PROMPT, VideoContext, build_messages, encode_conversation
from encoder import create_model, save_checkpoint
from training.recipes.chat import ChatConfig, ChatRecipe, build_datasets, build_recipe

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
QUESTION = "What colour is the video?"
BUDGET = 128  # fluxvit_tiny_patch14: 4 frames x 84 px, 128 of 144 tokens kept
TOKENS_PER_FRAME = 4


def answer_for(colour: str) -> str:
    return f"The video is {colour}."


def build_tokenizer(folder: Path, video_token: bool = True) -> Path:
    """A byte-level BPE (like Qwen's) trained on the phrases the tests use, saved with a chat template.

    ``video_token=False`` leaves ``<|video_pad|>`` out (as Qwen2 tokenizers do) so the product must add it.
    """
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + (["<|video_pad|>"] if video_token else [])
    corpus = [DEFAULT_SYSTEM_PROMPT, "You are a helpful assistant.", QUESTION, "Describe the video.",
              "The video lasts 2.0 seconds. 4 frames were sampled at 0.1s, 0.6s, 1.1s, 1.6s.",
              "The video is the segment from 0.5s to 1.5s of a longer video (1.0 seconds).",
              "system user assistant 0123456789", "How many frames? Which one? Tell me more about it."]
    corpus += [answer_for(c) for c in COLOURS]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus * 50, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=QWEN_CHAT_TEMPLATE)
    fast.save_pretrained(folder)
    return folder


def build_llm(folder: Path, seed: int = 0, teach_steps: int = 150, video_tokens: int = 16) -> Path:
    """A tiny Qwen2 saved next to the tokenizer in ``folder``, first taught to answer the colour question as
    "The video is <colour>." when the video positions hold the colour word's embedding (plus noise).

    That stands in for a pretrained LLM that can talk about what its input shows: projector training then has
    to map each clip's features to something the LLM reads as the right colour, as in the paper's setting."""
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(folder), str(folder))
    vocab = len(tokenizer)
    config = Qwen2Config(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=False, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    video_id = video_token_id(tokenizer)
    colour_ids = {c: tokenizer.encode(f" {c}", add_special_tokens=False) for c in COLOURS}
    rng = random.Random(seed)
    pool = []  # encoded once: the chat template is slower than the tiny model
    for colour in COLOURS:
        for duration in (1.0, 2.0, 2.5, 3.0):
            context = VideoContext(duration, tuple(round(duration * (i + 0.5) / 4, 1) for i in range(4)))
            messages = build_messages(DEFAULT_SYSTEM_PROMPT, context, [(QUESTION, answer_for(colour))])
            pool.append((*encode_conversation(tokenizer, messages, video_id, video_tokens), colour_ids[colour]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(teach_steps):
        rows = [rng.choice(pool) for _ in range(16)]
        length = max(len(ids) for ids, _, _ in rows)
        ids = torch.tensor([i + [0] * (length - len(i)) for i, _, _ in rows])
        labels = torch.tensor([lab + [-100] * (length - len(lab)) for _, lab, _ in rows])
        mask = ids == video_id
        table = model.get_input_embeddings()
        shown = torch.stack([table(torch.tensor(c)).mean(0) for _, _, c in rows])  # [B, D]
        seen = shown[:, None] + 0.3 * shown.std() * torch.randn(len(rows), length, shown.shape[-1])
        embeds = torch.where(mask[..., None], seen, table(ids.masked_fill(mask, 0)))
        attention = (torch.arange(length)[None] < torch.tensor([len(i) for i, _, _ in rows])[:, None]).long()
        loss = model(inputs_embeds=embeds, attention_mask=attention, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.save_pretrained(folder)
    return folder


def write_colour_clip(path: Path, colour: str, seed: int, frames: int = 8, size: tuple[int, int] = (112, 84),
                      fps: int = 4) -> Path:
    """An h264 clip of ``frames`` frames of one solid colour with pixel noise (PyAV, no ffmpeg needed)."""
    rng = np.random.default_rng(seed)
    width, height = size
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "18", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        for index in range(frames):
            pixels = np.array(COLOURS[colour], dtype=np.float64) + rng.normal(0, 25, (height, width, 3))
            frame = av.VideoFrame.from_ndarray(pixels.clip(0, 255).astype(np.uint8), format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def tiny_vit_checkpoint(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    save_checkpoint(create_model("fluxvit_tiny_patch14"), path)
    return path


def write_instructions(path: Path, clips: list[tuple[Path, str]]) -> Path:
    rows = [{"path": clip.name, "conversations": [{"role": "user", "content": QUESTION},
                                                  {"role": "assistant", "content": answer_for(colour)}]}
            for clip, colour in clips]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def chat_config(root: Path, llm: Path, vit: Path, train: Path, **chat: Any) -> ChatConfig:
    return ChatConfig.model_validate({
        "output_dir": str(root / "run"), "model": "fluxvit_tiny_patch14", "seed": 0, "tensorboard": False,
        "data": {"train": str(train), "batch_size": 8, "num_workers": 0},
        "chat": {"llm": str(llm), "vision": str(vit), "budget": BUDGET, "tokens_per_frame": TOKENS_PER_FRAME,
                 **chat},
    })


def train_projector(cfg: ChatConfig, steps: int, lr: float = 1e-3) -> tuple[ChatRecipe, list[float]]:
    """The engine's job in ten lines: AdamW on the recipe's trainable parameters over shuffled batches."""
    recipe, data = build_recipe(cfg), build_datasets(cfg)
    items = [data.train[i] for i in range(len(data.train))]
    optimizer = torch.optim.AdamW([p for p in recipe.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    order, losses = torch.Generator().manual_seed(cfg.seed), []
    recipe.train()
    for _ in range(steps):
        batch = data.collate([items[i] for i in torch.randperm(len(items), generator=order)[:8].tolist()])
        loss, _ = recipe(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return recipe.eval(), losses


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """The tiny models gain nothing from a second thread, and on a busy 2-core machine OpenMP's spinning
    threads make them 10x slower; restored afterwards for the other tests."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


@dataclass(frozen=True)
class ToyChat:
    """The colour task: an LLM folder, a ViT checkpoint, training clips, held-out clips, a trained projector."""

    root: Path
    llm: Path
    vit: Path
    train: Path
    held_out: list[tuple[Path, str]]
    projector: Path
    losses: list[float]


_BUILT: dict[Path, ToyChat] = {}


@pytest.fixture(scope="session")
def toy_chat(tmp_path_factory: pytest.TempPathFactory) -> ToyChat:
    """Built once per test run: each test module imports this fixture, which pytest then sets up per module."""
    base = tmp_path_factory.getbasetemp()
    if base not in _BUILT:
        _BUILT[base] = _build_toy_chat(tmp_path_factory.mktemp("toy_chat"))
    return _BUILT[base]


def _build_toy_chat(root: Path) -> ToyChat:
    with one_torch_thread():
        llm = build_llm(build_tokenizer(root / "llm"))
        vit = tiny_vit_checkpoint(root / "vit.pt")
        names = list(COLOURS)
        clips = [(write_colour_clip(root / f"clip{i}.mp4", names[i % 3], seed=i), names[i % 3]) for i in range(30)]
        train = write_instructions(root / "train.jsonl", clips[:24])
        recipe, losses = train_projector(chat_config(root, llm, vit, train), steps=40)
        projector = root / "projector.safetensors"
        recipe.export(projector)
    return ToyChat(root, llm, vit, train, clips[24:], projector, losses)
