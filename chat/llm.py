"""Loading the LLM and its tokenizer (local folder, or a hub id on an online machine) and its LoRA adapter.

Any causal LM that transformers loads and whose tokenizer has a chat template works; Qwen2 / Qwen2.5 are the
tested family. The video placeholder is Qwen2.5's ``<|video_pad|>``; tokenizers without it (Qwen2) get it as
an added special token, which is never embedded (its positions receive the video embeddings).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tokenizers import AddedToken
from transformers import (AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase,
                          PreTrainedTokenizerFast)

from .errors import ChatError, LLMNotFoundError

VIDEO_TOKEN = "<|video_pad|>"
LORA_TARGETS = ("q_proj", "v_proj")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
#: Qwen2's chat format (``<|im_start|>role ... <|im_end|>``), for tokenizers built from scratch (the demo, tests)
QWEN_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] != 'system' or not loop.first %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def resolve_llm(name_or_path: str | Path) -> str:
    """A local folder holding ``config.json``, or a hub id (``org/name``) that is not a local path."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise LLMNotFoundError(f"LLM folder {path} has no config.json; give the folder written by "
                                   "save_pretrained (config.json, weights, tokenizer files)")
        return str(path)
    if path.exists():
        raise LLMNotFoundError(f"LLM {path} is a file; give the folder that holds its config.json")
    if _HUB_ID.fullmatch(text):
        return text
    raise LLMNotFoundError(f"LLM folder {path} does not exist")


def _load(kind: str, source: str, loader: Any, **kwargs: Any) -> Any:
    try:
        return loader(source, **kwargs)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = "the folder" if Path(source).is_dir() else "the hub (set HF_HUB_OFFLINE=0 on an online machine)"
        raise LLMNotFoundError(f"cannot load the {kind} of LLM {source!r} from {where}: {first}") from None


#: what ``tokenizer_config.json`` names for a tokenizer saved as a plain ``tokenizers`` pipeline
_PLAIN_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")


def _tokenizer_loader(source: str) -> Any:
    """AutoTokenizer, except for a local folder whose tokenizer is saved as a plain ``tokenizers`` pipeline:
    there AutoTokenizer would rebuild it as the model type's class (a Qwen2 folder's as Qwen2Tokenizer, with
    Qwen2's pre-tokenizer in place of the saved one), so a tokenizer trained with its own split (the demo's)
    would read text differently from how it was trained."""
    config = Path(source) / "tokenizer_config.json"
    try:
        named = json.loads(config.read_text()).get("tokenizer_class") if config.is_file() else None
    except (OSError, ValueError, AttributeError):  # unreadable: AutoTokenizer reports it with the folder's name
        named = None
    plain = named in _PLAIN_TOKENIZER_CLASSES
    return PreTrainedTokenizerFast.from_pretrained if plain else AutoTokenizer.from_pretrained


def load_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerBase:
    """The LLM's tokenizer with the video placeholder as one special token; it must have a chat template."""
    source = resolve_llm(name_or_path)
    return prepare_tokenizer(_load("tokenizer", source, _tokenizer_loader(source)), source)


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase, source: str) -> PreTrainedTokenizerBase:
    """Check the chat template and make the video placeholder one special token (added when missing)."""
    if not tokenizer.chat_template:
        raise ChatError(f"the tokenizer of LLM {source!r} has no chat template; use a chat/instruct model")
    if len(tokenizer.encode(VIDEO_TOKEN, add_special_tokens=False)) != 1:
        tokenizer.add_tokens([AddedToken(VIDEO_TOKEN, special=True, normalized=False)], special_tokens=True)
    return tokenizer


def video_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    ids = tokenizer.encode(VIDEO_TOKEN, add_special_tokens=False)
    if len(ids) != 1:
        raise ChatError(f"tokenizer has no single {VIDEO_TOKEN} token; load it with chat.llm.load_tokenizer")
    return ids[0]


def load_llm(
    name_or_path: str | Path, dtype: torch.dtype | str = "auto"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The frozen causal LM (eval mode, on CPU; ``dtype="auto"``: the checkpoint's) and its tokenizer."""
    source = resolve_llm(name_or_path)
    tokenizer = load_tokenizer(source)
    model = _load("weights", source, AutoModelForCausalLM.from_pretrained, dtype=dtype)
    model.requires_grad_(False)
    return model.eval(), tokenizer


def llm_dim(llm: nn.Module) -> int:
    return llm.get_input_embeddings().embedding_dim


def stop_token_ids(llm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Tokens that end an answer: the tokenizer's EOS, the model's generation EOS and ``<|im_end|>``."""
    ids: set[int] = set()
    configured = getattr(getattr(llm, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    end = tokenizer.encode("<|im_end|>", add_special_tokens=False)
    if len(end) == 1:
        ids.add(end[0])
    return sorted(ids)


def add_lora(llm: PreTrainedModel, rank: int) -> nn.Module:
    """Trainable LoRA (alpha = 2 x rank, no dropout) on the attention query/value projections."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=list(LORA_TARGETS),
                        task_type="CAUSAL_LM")
    return get_peft_model(llm, config)


def load_lora(llm: PreTrainedModel, folder: str | Path) -> nn.Module:
    """The LLM with a saved LoRA adapter applied (frozen)."""
    from peft import PeftModel

    folder = Path(folder)
    if not (folder / "adapter_config.json").is_file():
        raise ChatError(f"LoRA adapter folder {folder} does not exist or has no adapter_config.json")
    model = PeftModel.from_pretrained(llm, str(folder))
    model.requires_grad_(False)
    return model.eval()


def decoder_and_head(llm: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The transformer body and the LM head, so a loss can run the head on the answer positions only."""
    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    return base.get_decoder(), base.get_output_embeddings()
