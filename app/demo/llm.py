"""The demo's language model before training: a byte-level BPE tokenizer learnt from the world's own text
(prompts, questions, answers) with a Qwen-style chat template, and a small randomly initialised Qwen2.

Byte-level BPE (as Qwen's) encodes any text a user types; the vocabulary is fitted to the demo so the model
stays tiny. ``fluxvid demo train`` then trains this LM together with the projector (``chat.train_llm``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from chat.llm import QWEN_CHAT_TEMPLATE, prepare_tokenizer
from chat.prompt import DEFAULT_SYSTEM_PROMPT, VideoContext

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|video_pad|>"]
# GPT-2's split into words, numbers and punctuation, with one piece added first: a decimal number with the
# prompt's "s," after it ("0.4s,") stays whole, so BPE learns frame times as single tokens. The 16 frame times
# were half of a prompt's text at 5-6 tokens each, and the LM's attention grows with the square of the length.
PIECES = r"""\s?\d+\.\d+(?:s,?)?|'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def corpus(conversation_files: list[Path], durations: list[float]) -> list[str]:
    """Every text the model will read or write: system prompts, video descriptions (one per training clip's
    duration, with its 16 frame times, so the frame times the prompts carry get tokens of their own),
    questions, answers."""
    texts = [DEFAULT_SYSTEM_PROMPT, "You are a helpful assistant.", "system user assistant"]
    texts += [VideoContext(d, tuple(round((i + 0.5) * d / 16, 1) for i in range(16))).describe() for d in durations]
    texts += [VideoContext(12.0, (1.0, 2.0), start=s / 2, end=s / 2 + 3).describe() for s in range(20)]
    for path in conversation_files:
        for line in path.read_text().splitlines():
            texts += [turn["content"] for turn in json.loads(line)["conversations"]]
    return texts


def build_tokenizer(texts: list[str], folder: Path, vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(PIECES), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        chat_template=QWEN_CHAT_TEMPLATE)
    tokenizer.save_pretrained(folder)
    return tokenizer


def build_llm(folder: str | Path, texts: list[str], seed: int, hidden: int = 192, layers: int = 3,
              heads: int = 6) -> Path:
    """Tokenizer plus a seeded, untrained Qwen2 saved in ``folder`` (what ``chat.llm`` loads)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = prepare_tokenizer(build_tokenizer(texts, folder), str(folder))
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads // 2,
                         max_position_embeddings=1024, tie_word_embeddings=True,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        Qwen2ForCausalLM(config).save_pretrained(folder)
    return folder
