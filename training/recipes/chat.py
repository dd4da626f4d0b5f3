"""Chat-centric training (paper 4.4 and appendix "Chat Centric Training"), the "linear probe" setting:
FluxViT and the LLM stay frozen and only the projector between them trains (optionally LoRA on the LLM too),
on instruction data in JSONL with the loss on the answer tokens only.

The ViT and the LLM are loaded from their own paths and are not part of training checkpoints; ``export``
writes the projector file (and the LoRA adapter folder next to it) that ``fluxvid chat`` loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from chat.data import ChatSampling, InstructionCollate, InstructionDataset, read_instructions
from chat.features import VisionFeatures
from chat.llm import add_lora, decoder_and_head, llm_dim, load_llm, load_tokenizer, video_token_id
from chat.projector import PROJECTOR_FILE, Projector, ProjectorInfo, ProjectorKind, save_projector
from chat.prompt import DEFAULT_SYSTEM_PROMPT, IGNORE_INDEX, splice_video
from chat.vision import VisionTower, check_tokens_per_frame, load_vision, video_token_count
from encoder import FluxViTConfig, get_config, list_models, plan
from encoder.checkpoint import read_checkpoint, save_checkpoint

from ..config import OptimConfig, Strict, TrainConfig
from ..data import BudgetTurn
from ..recipe import Recipe


class ChatSection(Strict):
    llm: str = Field(description="LLM folder saved by transformers (or a hub id on an online machine)")
    vision: str = Field(description="FluxViT checkpoint file; a registered model name gives seeded random "
                                    "weights (smoke tests only)")
    second_vision: str | None = Field(None, description="a second FluxViT checkpoint that encodes the tokens the "
                                                        "first keeps; its features are concatenated to the "
                                                        "first's (saved as <projector>-second-vision.pt)")
    budget: int = Field(1024, ge=1, description="vision token budget (the sampling follows its plan)")
    train_budgets: tuple[int, ...] = Field((), description="budgets that training batches take in turn, each "
                                                           "read as serving reads it (the sampling the ViT's "
                                                           "Token Optimization table gives it), so the one "
                                                           "projector serves them all (empty: budget alone)")
    projector: ProjectorKind = Field("linear", description="linear (the paper's) or mlp2 (two-layer GELU)")
    tokens_per_frame: int | None = Field(None, ge=1, description="pool each frame to this square count; "
                                                                  "None sends every kept token")
    summary_token: bool = Field(False, description="end the video with one more embedding: the ViTs' "
                                                   "attention-pooled features (what the classifier and the CLIP "
                                                   "head read), through a projector net of its own")
    lora: bool = False
    lora_rank: int = Field(16, ge=1)
    train_llm: bool = Field(False, description="train the whole LLM too (a small LM taught one domain, as the "
                                               "demo's); it is saved as <projector>-llm beside the projector")
    train_vision: bool | Literal["second"] = Field(False, description="fine-tune the ViT (and a second one) too, "
                                                                      "end to end (small models learning one "
                                                                      "domain), saved as <projector>-vision.pt "
                                                                      "beside it; 'second': only the second ViT")
    vision_lr_scale: float = Field(0.1, gt=0, le=1, description="with train_vision: the ViTs' learning rate "
                                                                "relative to the projector's and the LLM's")
    max_length: int = Field(2048, ge=16, description="token limit of a sample; later turns beyond it are dropped")
    independent_turns: float = Field(0.0, ge=0, le=1, description="share of samples whose turns are each trained "
                                                                 "as if asked first about the clip, blind to the "
                                                                 "others (separate questions, not a dialogue), "
                                                                 "packed behind their shared prefix; the rest "
                                                                 "stay dialogues")
    cache_clips: bool = Field(False, description="decode every sample's clip once and keep it in memory (uint8, "
                                                 "T x S x S x 3 bytes a sample); the same batches, less CPU")
    cache_features: bool = Field(False, description="frozen ViTs only: keep each training sample's features (the "
                                                    "ViTs' output at each token count it is trained at) in memory "
                                                    "after the first time it is encoded; the same batches, without "
                                                    "the ViTs' forward from the second epoch on")
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT


class ChatConfig(TrainConfig):
    """``data.train`` / ``data.val`` are instruction JSONL files; ``data.budgets``, ``flexible``, ``frames``
    and ``resolution`` are not used (``chat.budget`` fixes the sampling). ``model`` names the architecture
    of a released (config-less) ViT checkpoint."""

    # The paper's stage-1 lr; no weight decay and AdamW's usual betas as in LLaVA-style projector training.
    # The paper's 3% warm-up is a ratio of the run: set optim.warmup_steps to 0.03 x the step count.
    optim: OptimConfig = OptimConfig(lr=1e-3, weight_decay=0.0, betas=(0.9, 0.999))
    drop_path: float = 0.0
    chat: ChatSection

    @model_validator(mode="after")
    def _vision_from_chat_section(self) -> "ChatConfig":
        if self.init_checkpoint is not None:
            raise ValueError("chat training takes the ViT from chat.vision; leave init_checkpoint unset")
        if any(b < 1 for b in self.chat.train_budgets):
            raise ValueError(f"chat.train_budgets must be positive token counts, got {list(self.chat.train_budgets)}")
        if self.data.cache_frames:
            raise ValueError("data.cache_frames draws frames at random, as Flux-UMT / FT / CLIP sample; the chat "
                             "always samples the same frames: set chat.cache_clips: true instead")
        if self.chat.train_vision == "second" and self.chat.second_vision is None:
            raise ValueError("chat.train_vision: second fine-tunes the second ViT, but chat.second_vision is not set")
        if self.chat.cache_features and self.chat.train_vision:
            raise ValueError("chat.cache_features keeps frozen ViTs' features; with chat.train_vision they change "
                             "every step: turn one of them off")
        if self.chat.lora and self.chat.train_llm:
            raise ValueError("chat.lora and chat.train_llm exclude each other: train_llm already trains every "
                             "LLM weight")
        return self


def vision_config(cfg: ChatConfig) -> FluxViTConfig:
    """The ViT's architecture without building it, as :func:`chat.vision.load_vision` will: the checkpoint's
    FluxVid config, else the registered ``model`` (released checkpoints), or the registered name itself."""
    source = cfg.chat.vision
    if Path(source).expanduser().is_file():
        _, metadata = read_checkpoint(Path(source).expanduser())
        return FluxViTConfig.from_dict(metadata["config"]) if "config" in metadata else get_config(cfg.model)
    if source not in list_models():
        raise ValueError(f"chat.vision {source!r} is neither a FluxViT checkpoint file nor a registered model "
                         f"({', '.join(list_models())})")
    return get_config(source)


def _llm_dtype(precision: str, trained: bool) -> torch.dtype:
    """A frozen LLM is stored in the compute dtype (half the memory); a trained one stays fp32, so AdamW updates
    full-precision master weights while autocast computes in bf16 / fp16."""
    if trained:
        return torch.float32
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _source_name(source: str) -> str:
    """Local paths are recorded absolute (the projector file may be used from anywhere); names as given."""
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else source


def turn_mask(segments: torch.Tensor) -> torch.Tensor:
    """Attention mask ``[B, 1, L, L]`` of packed independent turns (``segments``: 0 on the shared prefix, turn
    numbers after it, -1 on padding): causal, and a token sees the prefix and its own turn only (padding sees
    padding, so no row of the mask is empty)."""
    query, key = segments[:, :, None], segments[:, None, :]
    length = segments.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=segments.device).tril()
    return (causal & ((key == 0) | (key == query)))[:, None]


class ChatRecipe(Recipe):
    """Batch (from :func:`build_datasets`' collate): ``video [B, 3, T, S, S]``, ``input_ids`` / ``labels`` /
    ``attention_mask`` ``[B, L]`` with the video placeholder repeated once per video token, and the ``budget``
    the batch was read at."""

    frozen_prefixes: tuple[str, ...] = ("vision.", "llm.")

    def __init__(self, cfg: ChatConfig) -> None:
        super().__init__()
        self.cfg = cfg
        section = cfg.chat
        second = load_vision(section.second_vision, cfg.model) if section.second_vision else None
        self.vision = VisionTower(load_vision(section.vision, cfg.model), section.budget, section.tokens_per_frame,
                                  second=second, summary=section.summary_token)
        llm, tokenizer = load_llm(section.llm, dtype=_llm_dtype(cfg.precision, section.train_llm))
        self.tokenizer = tokenizer
        if section.train_llm:
            llm.requires_grad_(True)
        trained_vision = {True: self.vision, "second": self.vision.second}.get(section.train_vision)
        if trained_vision is not None:
            trained_vision.requires_grad_(True)
        frozen_vision = {False: "vision.", "second": "vision.vit."}.get(section.train_vision)
        self.frozen_prefixes = tuple(prefix for prefix, frozen in ((frozen_vision, frozen_vision is not None),
                                                                   ("llm.", not section.train_llm)) if frozen)
        if cfg.grad_checkpointing:
            llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.video_id = video_token_id(tokenizer)
        # the towers of the budgets batches take in turn: views of the same ViTs at each budget's sampling
        self._towers = {budget: self.vision.at(budget) for budget in section.train_budgets}
        self._features: dict[tuple[int, int], VisionFeatures] = {}  # (sample, budget) -> features
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.projector = Projector(section.projector, self.vision.dim, llm_dim(llm), self.vision.summary_dim)
            self.llm = add_lora(llm, section.lora_rank) if section.lora else llm

    def train(self, mode: bool = True) -> "ChatRecipe":
        """The ViT stays in eval mode (no drop path, whether frozen or fine-tuned); the LLM follows (dropout,
        gradient checkpointing)."""
        super().train(mode)
        self.vision.eval()
        return self

    def param_groups(self, weight_decay: float, layer_decay: float, base_lr: float) -> list[dict[str, Any]]:
        """The base groups, with a fine-tuned ViT at ``vision_lr_scale``: it starts trained, while the projector
        (and a trained LLM) start from scratch and send it noisy gradients at first."""
        in_vision = {id(p) for p in self.vision.parameters()}
        groups = []
        for group in super().param_groups(weight_decay, layer_decay, base_lr):
            vision = [p for p in group["params"] if id(p) in in_vision]
            rest = [p for p in group["params"] if id(p) not in in_vision]
            groups += [{**group, "params": part, "lr_scale": group["lr_scale"] * factor}
                       for part, factor in ((rest, 1.0), (vision, self.cfg.chat.vision_lr_scale)) if part]
        return groups

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The projector plus the LoRA weights, which live under the frozen ``llm.`` prefix."""
        trainable = {name for name, param in self.named_parameters() if param.requires_grad}
        return {k: v for k, v in self.state_dict().items()
                if k in trainable or not k.startswith(self.frozen_prefixes)}

    def budget_turns(self) -> list[BudgetTurn]:
        plans = [self._towers[budget].plan for budget in self.cfg.chat.train_budgets]
        return [BudgetTurn(p.budget, p.frames, p.resolution) for p in plans]

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """In training, the batch's budget (``train_budgets`` in turn); otherwise ``chat.budget``."""
        tower = self._towers.get(batch.get("budget"), self.vision) if self.training else self.vision
        video = self.projector(self._vision_features(batch, tower))
        embeds = splice_video(self.llm.get_input_embeddings(), batch["input_ids"], video, self.video_id)
        decoder, head = decoder_and_head(self.llm)
        if "segments" in batch:  # independent turns: each sees the shared prefix and itself, from its own positions
            hidden = decoder(inputs_embeds=embeds, attention_mask=turn_mask(batch["segments"]),
                             position_ids=batch["position_ids"], use_cache=False)
        else:
            hidden = decoder(inputs_embeds=embeds, attention_mask=batch["attention_mask"], use_cache=False)
        targets = batch["labels"][:, 1:]
        answer = targets != IGNORE_INDEX
        logits = head(hidden.last_hidden_state[:, :-1][answer]).float()
        loss = F.cross_entropy(logits, targets[answer])
        accuracy = (logits.detach().argmax(-1) == targets[answer]).float().mean()
        return loss, {"answer_accuracy": float(accuracy), "answer_tokens": float(answer.sum())}

    def _vision_features(self, batch: dict[str, Any], tower: VisionTower) -> VisionFeatures:
        """The ViTs' features for the batch; with ``chat.cache_features`` in training, each sample's are
        encoded once per budget (frozen ViTs in eval mode on a fixed sampling give the same ones again)."""
        if not (self.training and self.cfg.chat.cache_features):
            return tower(batch["video"])
        samples = [(sample, tower.plan.budget) for sample in batch["sample"].tolist()]
        missing = [row for row, key in enumerate(samples) if key not in self._features]
        if missing:
            fresh = tower(batch["video"][missing])
            for index, row in enumerate(missing):
                self._features[samples[row]] = VisionFeatures(
                    *(None if part is None else part[index].clone() for part in fresh))
        rows = [self._features[key] for key in samples]
        return VisionFeatures(*(None if parts[0] is None else torch.stack(parts) for parts in zip(*rows)))

    def export(self, path: str | Path) -> None:
        """Write the projector file (a folder gets ``projector.safetensors``) and, with LoRA, the adapter
        folder ``<name>-lora`` beside it; with ``train_llm``, the LLM and its tokenizer as ``<name>-llm``; with
        ``train_vision``, the ViT as ``<name>-vision.pt``; a second ViT as ``<name>-second-vision.pt`` (so the
        folder holds every model the projector reads)."""
        path = Path(path)
        if path.is_dir():
            path = path / PROJECTOR_FILE
        section = self.cfg.chat
        lora = None
        llm = _source_name(section.llm)
        if section.lora:
            lora = f"{path.stem}-lora"
            self.llm.save_pretrained(str(path.parent / lora))
        if section.train_llm:
            llm = f"{path.stem}-llm"  # relative to the projector file, like the LoRA folder
            self.llm.save_pretrained(str(path.parent / llm))
            self.tokenizer.save_pretrained(str(path.parent / llm))
        vision = _source_name(section.vision)
        if section.train_vision is True:
            vision = f"{path.stem}-vision.pt"
            save_checkpoint(self.vision.vit, path.parent / vision, recipe="chat", init=_source_name(section.vision))
        second = None
        if self.vision.second is not None:
            second = f"{path.stem}-second-vision.pt"
            save_checkpoint(self.vision.second, path.parent / second, recipe="chat",
                            init=_source_name(str(section.second_vision)))
        info = ProjectorInfo(
            kind=section.projector, vision_dim=self.vision.dim, llm_dim=llm_dim(self.llm),
            vision=vision, vision_model=self.vision.vit.config.name,
            llm=llm, budget=section.budget, tokens_per_frame=section.tokens_per_frame, lora=lora,
            second_vision=second, summary_dim=self.vision.summary_dim,
        )
        save_projector(self.projector, info, path)


class ChatData(NamedTuple):
    train: InstructionDataset
    val: InstructionDataset | None
    collate: InstructionCollate


def build_recipe(cfg: ChatConfig) -> ChatRecipe:
    return ChatRecipe(cfg)


def build_datasets(cfg: ChatConfig) -> ChatData:
    """Datasets over ``data.train`` (and ``data.val``) and the collate function that makes the recipe's batch."""
    section = cfg.chat
    vit = vision_config(cfg)
    samplings = {}
    for budget in (section.budget, *section.train_budgets):
        sampling = plan(budget, vit)
        check_tokens_per_frame(sampling, vit.patch_size, section.tokens_per_frame)
        count = video_token_count(sampling, vit.tubelet_size, section.tokens_per_frame, section.summary_token)
        samplings[budget] = ChatSampling(sampling, count)
    tokenizer = load_tokenizer(section.llm)

    def dataset(source: Path) -> InstructionDataset:
        return InstructionDataset(source, read_instructions(source, cfg.data.root), tokenizer, samplings,
                                  section.budget, video_token_id(tokenizer), section.system_prompt,
                                  section.max_length, section.independent_turns)

    train, val = dataset(cfg.data.train), dataset(cfg.data.val) if cfg.data.val else None
    if section.cache_clips:
        train.cache_clips(cfg.data.num_workers)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return ChatData(train, val, InstructionCollate(pad_id if pad_id is not None else 0))
