"""Projector training in the paper's "linear probe" setting on a toy task: say the colour of a clip."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from chat import ChatModel, GenerationSettings, Session, read_projector_info
from chat.data import read_instructions
from chat.errors import ChatDataError
from encoder.video import SkippedVideo
from tests.test_chat_support import (  # noqa: F401 (fixtures)
    BUDGET, QUESTION, TOKENS_PER_FRAME, ToyChat, answer_for, chat_config, _one_torch_thread, toy_chat, train_projector,
)
from training.config import ConfigError, load_config
from training.data import BudgetTurn, ResumableBatchSampler, SampleKey
from training.engine import Trainer, checkpoint_files
from training.recipes.chat import ChatConfig, build_datasets, build_recipe

GREEDY = GenerationSettings(max_new_tokens=12, temperature=0.0, repetition_penalty=1.0)


def test_training_drives_the_loss_down_and_answers_held_out_clips(toy_chat: ToyChat) -> None:
    losses = toy_chat.losses
    assert sum(losses[-5:]) / 5 < 0.25 * sum(losses[:5]) / 5, losses
    model = ChatModel.load(toy_chat.projector)  # LLM, ViT, budget and pooling come from the projector file
    for clip, colour in toy_chat.held_out:
        session = Session(model, GREEDY)
        session.load_video(clip)
        assert session.chat(QUESTION) == answer_for(colour)


def test_only_the_projector_trains_and_checkpoints_hold_only_it(toy_chat: ToyChat) -> None:
    recipe = build_recipe(chat_config(toy_chat.root, toy_chat.llm, toy_chat.vit, toy_chat.train))
    trainable = {n for n, p in recipe.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("projector.") for n in trainable)
    assert set(recipe.trainable_state_dict()) == {n for n in recipe.state_dict() if n.startswith("projector.")}
    assert recipe.frozen_prefixes == ("vision.", "llm.")
    recipe.train()
    assert not recipe.vision.training


def test_export_records_what_the_projector_fits(toy_chat: ToyChat) -> None:
    info = read_projector_info(toy_chat.projector)
    assert (info.kind, info.budget, info.tokens_per_frame, info.lora) == ("linear", BUDGET, TOKENS_PER_FRAME, None)
    assert info.vision == str(toy_chat.vit.resolve()) and info.llm == str(toy_chat.llm.resolve())
    assert (info.vision_dim, info.llm_dim) == (96, 64)
    assert toy_chat.projector.stat().st_size < 100_000


def test_lora_trains_exports_and_reloads(toy_chat: ToyChat, tmp_path: Path) -> None:
    cfg = chat_config(tmp_path, toy_chat.llm, toy_chat.vit, toy_chat.train, lora=True, lora_rank=4,
                      projector="mlp2")
    recipe, losses = train_projector(cfg, steps=3)
    assert all(torch.isfinite(torch.tensor(losses)))
    state = recipe.trainable_state_dict()
    assert any("lora_A" in k for k in state) and any(k.startswith("projector.") for k in state)
    assert not any(k.endswith("base_layer.weight") or "embed_tokens" in k for k in state)
    recipe.export(tmp_path)  # a folder: projector.safetensors inside, adapter beside it
    info = read_projector_info(tmp_path / "projector.safetensors")
    assert info.lora == "projector-lora" and (tmp_path / "projector-lora" / "adapter_config.json").is_file()
    model = ChatModel.load(tmp_path / "projector.safetensors")
    assert type(model.llm).__name__ == "PeftModelForCausalLM"
    session = Session(model, GREEDY)
    session.load_video(toy_chat.held_out[0][0])
    assert isinstance(session.chat(QUESTION), str)


def test_train_llm_only_leaves_the_vit_frozen(toy_chat: ToyChat, tmp_path: Path) -> None:
    recipe = build_recipe(chat_config(tmp_path, toy_chat.llm, toy_chat.vit, toy_chat.train, train_llm=True))
    assert recipe.frozen_prefixes == ("vision.",)
    assert all(p.requires_grad for p in recipe.llm.parameters())
    assert not any(p.requires_grad for p in recipe.vision.parameters())


def test_end_to_end_training_ships_the_llm_and_the_vit_beside_the_projector(
        toy_chat: ToyChat, tmp_path: Path) -> None:
    cfg = chat_config(tmp_path, toy_chat.llm, toy_chat.vit, toy_chat.train, train_llm=True, train_vision=True)
    recipe = build_recipe(cfg)
    llm_before = {n: p.detach().clone() for n, p in recipe.llm.named_parameters()}
    vit_before = {n: p.detach().clone() for n, p in recipe.vision.vit.named_parameters()}
    assert recipe.frozen_prefixes == ()
    groups = recipe.param_groups(0.05, 1.0, 1e-3)
    vision_ids = {id(p) for p in recipe.vision.parameters()}
    scales = {g["lr_scale"] for g in groups if all(id(p) in vision_ids for p in g["params"])}
    assert scales == {0.1} and sum(len(g["params"]) for g in groups) == len(list(recipe.parameters()))
    recipe, _ = train_projector(cfg, steps=2)
    state = recipe.trainable_state_dict()
    assert any(k.startswith("llm.") for k in state) and any(k.startswith("vision.") for k in state)
    recipe.export(tmp_path)
    info = read_projector_info(tmp_path / "projector.safetensors")
    assert (info.llm, info.vision) == ("projector-llm", "projector-vision.pt")
    assert (tmp_path / "projector-llm" / "tokenizer.json").is_file()
    moved = tmp_path / "moved"  # the projector, its LLM folder and its ViT travel together
    moved.mkdir()
    for name in ("projector.safetensors", "projector-llm", "projector-vision.pt"):
        (tmp_path / name).rename(moved / name)
    model = ChatModel.load(moved / "projector.safetensors")
    assert Path(model.llm_name) == moved / "projector-llm"
    assert Path(model.vision_name) == moved / "projector-vision.pt"
    trained_llm = dict(model.llm.named_parameters())
    assert any(not torch.equal(trained_llm[n], p) for n, p in llm_before.items())
    trained_vit = dict(model.vision.vit.named_parameters())
    assert any(not torch.equal(trained_vit[n], p) for n, p in vit_before.items())
    with pytest.raises(ConfigError, match="exclude each other"):
        load_config(_yaml(tmp_path, cfg, lora=True), ChatConfig)


@pytest.mark.parametrize("train_vision", [False, True, "second"])
def test_a_second_vit_trains_with_the_first_and_ships_beside_the_projector(
        toy_chat: ToyChat, tmp_path: Path, train_vision: bool | str) -> None:
    cfg = chat_config(tmp_path, toy_chat.llm, toy_chat.vit, toy_chat.train, train_vision=train_vision,
                      second_vision=str(toy_chat.vit))
    start = build_recipe(cfg).vision
    initial = {part: {n: p.detach().clone() for n, p in vit.named_parameters()}
               for part, vit in (("first", start.vit), ("second", start.second))}
    recipe, losses = train_projector(cfg, steps=2)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert recipe.projector.vision_dim == 192
    trains = {"first": train_vision is True, "second": bool(train_vision)}
    for part, vit in (("first", recipe.vision.vit), ("second", recipe.vision.second)):
        assert all(p.requires_grad == trains[part] for p in vit.parameters()), part
        assert any(not torch.equal(initial[part][n], p) for n, p in vit.named_parameters()) == trains[part], part
    assert recipe.frozen_prefixes == {False: ("vision.", "llm."), True: ("llm.",),
                                      "second": ("vision.vit.", "llm.")}[train_vision]
    source = {n: p.detach().clone() for n, p in recipe.vision.second.named_parameters()}
    recipe.export(tmp_path)
    info = read_projector_info(tmp_path / "projector.safetensors")
    assert (info.vision_dim, info.second_vision) == (192, "projector-second-vision.pt")
    assert info.vision == ("projector-vision.pt" if trains["first"] else str(toy_chat.vit.resolve()))
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("projector.safetensors", "projector-second-vision.pt") + (("projector-vision.pt",) * trains["first"]):
        (tmp_path / name).rename(moved / name)
    model = ChatModel.load(moved / "projector.safetensors")
    assert model.vision.dim == 192
    loaded = dict(model.vision.second.named_parameters())
    assert all(torch.equal(loaded[n], p) for n, p in source.items())
    session = Session(model, GREEDY)
    session.load_video(toy_chat.held_out[0][0])
    assert isinstance(session.chat(QUESTION), str)


def test_training_the_second_vit_alone_needs_one(toy_chat: ToyChat, tmp_path: Path) -> None:
    config = chat_config(tmp_path, toy_chat.llm, toy_chat.vit, toy_chat.train).model_dump(mode="json")
    config["chat"]["train_vision"] = "second"
    with pytest.raises(ValueError, match="chat.second_vision is not set"):
        ChatConfig.model_validate(config)


def _yaml(tmp_path: Path, cfg: ChatConfig, **chat: object) -> Path:
    import yaml

    data = cfg.model_dump(mode="json")
    data["chat"].update(chat)
    path = tmp_path / "chat.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_dataset_items_and_batches(toy_chat: ToyChat) -> None:
    cfg = chat_config(toy_chat.root, toy_chat.llm, toy_chat.vit, toy_chat.train)
    data = build_datasets(cfg)
    assert data.val is None and len(data.train) == 24
    by_int, by_key = data.train[3], data.train[SampleKey(3, frames=16, resolution=112, seed=1)]
    assert torch.equal(by_int["input_ids"], by_key["input_ids"])  # the chat budget fixes the sampling
    assert by_int["video"].shape == (3, 4, 84, 84)
    labelled = by_int["labels"][by_int["labels"] != -100].tolist()
    assert data.train.tokenizer.decode(labelled) == answer_for("red") + "<|im_end|>\n"
    skipped = SkippedVideo(5, "gone.mp4", "file does not exist")
    batch = data.collate([data.train[0], skipped, data.train[1]])
    assert batch["video"].shape[0] == 2 and batch["skipped"] == [skipped]
    assert batch["attention_mask"].sum(1).tolist() == [len(data.train[0]["input_ids"]), len(data.train[1]["input_ids"])]


def test_train_budgets_take_turns_each_read_as_serving_reads_it(toy_chat: ToyChat) -> None:
    cfg = chat_config(toy_chat.root, toy_chat.llm, toy_chat.vit, toy_chat.train, train_budgets=[BUDGET, 48])
    recipe, data = build_recipe(cfg), build_datasets(cfg)
    turns = recipe.budget_turns()  # the tiny ViT's table: 128 tokens on 4 frames, 48 on 2 (both at 84 px)
    assert turns == [BudgetTurn(BUDGET, 4, 84), BudgetTurn(48, 2, 84)]
    sampler = ResumableBatchSampler(len(data.train), 4, recipe.vision.vit.config, seed=0, flexible=False, frames=4,
                                    resolution=84, turns=turns)
    batches = [data.collate([data.train[key] for key in keys]) for keys in list(sampler)[:3]]
    assert [b["budget"] for b in batches] == [BUDGET, 48, BUDGET]
    assert [b["video"].shape[2] for b in batches] == [4, 2, 4]
    placeholders = [int((b["input_ids"][0] == data.train.video_id).sum()) for b in batches]
    assert placeholders == [4 * TOKENS_PER_FRAME, 2 * TOKENS_PER_FRAME, 4 * TOKENS_PER_FRAME]
    sampler.set_position(epoch=1, start_batch=1)  # batch 7 of the run (6 a epoch): 48 tokens again
    assert len(sampler) == 6 and {k.budget for k in next(iter(sampler))} == {48}
    recipe.train()
    with torch.no_grad():
        assert torch.isfinite(recipe(batches[1])[0]), "in training the batch's budget picks the ViT's sampling"
        recipe.eval()
        with pytest.raises(ValueError, match="expects video"):
            recipe(batches[1])  # outside training: chat.budget's sampling only


def test_independent_turns_train_each_turn_as_if_asked_first(toy_chat: ToyChat, tmp_path: Path) -> None:
    turns = [("What colour is the video?", "Red."), ("Is anything moving?", "Nothing moves."),
             ("What colour is the video, again?", "Still red.")]

    def messages(pairs: list[tuple[str, str]]) -> list[dict[str, str]]:
        return [m for q, a in pairs for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]

    clips = [str(clip) for clip, _ in toy_chat.held_out[:2]]
    together, alone = tmp_path / "together.jsonl", tmp_path / "alone.jsonl"
    together.write_text("".join(json.dumps({"path": c, "conversations": messages(turns)}) + "\n" for c in clips))
    alone.write_text("".join(json.dumps({"path": c, "conversations": messages([t])}) + "\n"
                             for c in clips for t in turns))
    packed_cfg = chat_config(tmp_path, toy_chat.llm, toy_chat.vit, together, independent_turns=1.0)
    packed_data = build_datasets(packed_cfg)
    packed, single = packed_data.train, build_datasets(chat_config(tmp_path, toy_chat.llm, toy_chat.vit, alone)).train
    item = packed[0]
    conversations = [single[i]["input_ids"] for i in range(3)]
    prefix = int((item["segments"] == 0).sum())
    assert all(torch.equal(c[:prefix], item["input_ids"][:prefix]) for c in conversations), "one shared prefix"
    assert len(item["input_ids"]) == prefix + sum(len(c) - prefix for c in conversations)
    for turn, conversation in enumerate(conversations, start=1):  # each turn where a first question would be
        mine = item["segments"] == turn
        assert torch.equal(item["input_ids"][mine], conversation[prefix:])
        assert item["position_ids"][mine].tolist() == list(range(prefix, len(conversation)))
    recipe = build_recipe(packed_cfg).eval()
    batch = packed_data.collate([packed[0], packed[1]])
    with torch.no_grad():
        together_loss = recipe(batch)[0]
        alone_loss = recipe(packed_data.collate([single[i] for i in range(6)]))[0]  # the same answer tokens
        assert torch.allclose(together_loss, alone_loss, atol=1e-5)
        unmasked = {k: v for k, v in batch.items() if k not in ("segments", "position_ids")}
        assert not torch.allclose(recipe(unmasked)[0], together_loss, atol=1e-3), "unmasked, turns see each other"
    mixed = build_datasets(chat_config(tmp_path, toy_chat.llm, toy_chat.vit, together, independent_turns=0.5))
    dialogue = build_datasets(chat_config(tmp_path, toy_chat.llm, toy_chat.vit, together)).train[0]
    items = [mixed.train[SampleKey(0, frames=0, resolution=0, seed=seed)] for seed in range(12)]
    layouts = {int(item["segments"].max()) for item in items}
    assert layouts == {0, 3}, "the seed picks, per sample, packed turns or the dialogue"
    as_dialogue = next(item for item in items if int(item["segments"].max()) == 0)
    assert torch.equal(as_dialogue["input_ids"], dialogue["input_ids"])
    assert as_dialogue["position_ids"].tolist() == list(range(len(dialogue["input_ids"])))
    with torch.no_grad():  # in the packed layout a dialogue is still a dialogue
        assert torch.allclose(recipe(mixed.collate([as_dialogue]))[0], recipe(mixed.collate([dialogue]))[0], atol=1e-5)


def test_a_missing_video_is_skipped_not_fatal(toy_chat: ToyChat, tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    good = {"path": str(toy_chat.held_out[0][0]), "conversations": [
        {"from": "human", "value": "<video>\nWhat?"}, {"from": "gpt", "value": "Nothing."}]}
    rows.write_text(json.dumps({**good, "path": str(tmp_path / "gone.mp4")}) + "\n" + json.dumps(good) + "\n")
    data = build_datasets(chat_config(tmp_path, toy_chat.llm, toy_chat.vit, rows))
    assert isinstance(data.train[0], SkippedVideo) and "file does not exist" in data.train[0].reason
    assert data.collate([data.train[0]]) == {"skipped": [data.train[0]]}  # the engine skips such a batch
    prompt = data.train.tokenizer.decode(data.train[1]["input_ids"])
    assert "<video>" not in prompt and prompt.count("What?") == 1  # LLaVA-style turns, marker dropped


def test_cached_clips_give_the_same_items_and_never_decode_again(toy_chat: ToyChat, tmp_path: Path) -> None:
    clips = [str(shutil.copy(clip, tmp_path / f"copy{i}.mp4")) for i, (clip, _) in enumerate(toy_chat.held_out[:3])]
    turns = [{"role": "user", "content": "What colour is it?"}, {"role": "assistant", "content": "Red."}]
    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join(json.dumps(row) for row in [
        {"path": clips[0], "conversations": turns}, {"path": clips[1], "start": 0.5, "end": 1.5, "conversations": turns},
        {"path": str(tmp_path / "gone.mp4"), "conversations": turns}, {"path": clips[2], "conversations": turns},
    ]) + "\n")
    decoded = build_datasets(chat_config(tmp_path, toy_chat.llm, toy_chat.vit, rows)).train
    expected = [decoded[i] for i in range(4)]
    config = chat_config(tmp_path, toy_chat.llm, toy_chat.vit, rows, cache_clips=True).model_dump(mode="json")
    config["data"]["num_workers"] = 2  # built by decode workers, as in training
    cached = build_datasets(ChatConfig.model_validate(config)).train
    assert decoded.nbytes == 0 and cached.nbytes == 3 * expected[0]["video"].numel()  # three clips, one byte each
    for clip in clips:
        Path(clip).unlink()  # from here on only the cache can give the frames
    for index, want in enumerate(expected):
        got = cached[SampleKey(index, frames=16, resolution=112, seed=index)]
        if index == 2:
            assert isinstance(got, SkippedVideo) and got.reason == want.reason and "file does not exist" in got.reason
            continue
        assert got["video"].dtype == torch.float32 and torch.equal(got["video"], want["video"])
        assert torch.equal(got["input_ids"], want["input_ids"]) and torch.equal(got["labels"], want["labels"])
    assert "0.5" in cached.tokenizer.decode(cached[1]["input_ids"])  # the window's context comes from the cache too


def test_cached_features_are_the_vits_own_and_spare_the_vit_its_forward(toy_chat: ToyChat) -> None:
    settings = {"train_budgets": [BUDGET, 48], "summary_token": True}
    cfg = chat_config(toy_chat.root, toy_chat.llm, toy_chat.vit, toy_chat.train, cache_features=True, **settings)
    recipe, data = build_recipe(cfg), build_datasets(cfg)
    plain = build_recipe(chat_config(toy_chat.root, toy_chat.llm, toy_chat.vit, toy_chat.train, **settings))

    def batch(samples: tuple[int, ...], budget: int) -> dict:
        return data.collate([data.train[SampleKey(i, frames=0, resolution=0, seed=0, budget=budget)] for i in samples])

    first, later = {b: batch((0, 1, 2, 3), b) for b in (BUDGET, 48)}, batch((2, 5, 3), BUDGET)
    recipe.train(), plain.train()
    with torch.no_grad():
        for budget in (BUDGET, 48):  # the batches take turns: 128 tokens on 4 frames, then 48 on 2
            assert torch.allclose(recipe(first[budget])[0], plain(first[budget])[0], atol=1e-6)
        assert set(recipe._features) == {(s, k) for s in range(4) for k in (BUDGET, 48)}
        blank = {**later, "video": torch.zeros_like(later["video"])}  # cached rows must ignore the pixels now
        cached, direct = recipe._vision_features(blank, recipe.vision), plain.vision(later["video"])
        for got, want in zip(cached, direct):  # the tokens, then the summary
            assert torch.allclose(got[[0, 2]], want[[0, 2]], atol=1e-6)  # samples 2 and 3: from the cache
            assert not torch.allclose(got[1], want[1], atol=1e-3)  # sample 5 is new: encoded from its blank pixels
        alone = plain.vision(blank["video"][1:2])
        assert torch.equal(cached.tokens[1], alone.tokens[0]) and torch.equal(cached.summary[1], alone.summary[0])
        recipe.eval()
        assert torch.allclose(recipe(blank)[0], plain.eval()(blank)[0], atol=1e-6), "outside training: no cache"


def test_features_are_cached_only_for_frozen_vits(toy_chat: ToyChat, tmp_path: Path) -> None:
    config = chat_config(tmp_path, toy_chat.llm, toy_chat.vit, toy_chat.train).model_dump(mode="json")
    config["chat"].update(cache_features=True, train_vision=True)
    with pytest.raises(ValueError, match="chat.cache_features.*chat.train_vision"):
        ChatConfig.model_validate(config)


def test_the_chat_rejects_random_frame_caching(toy_chat: ToyChat, tmp_path: Path) -> None:
    config = chat_config(tmp_path, toy_chat.llm, toy_chat.vit, toy_chat.train).model_dump(mode="json")
    config["data"]["cache_frames"] = 8
    with pytest.raises(ValueError, match="chat.cache_clips"):
        ChatConfig.model_validate(config)


@pytest.mark.parametrize("line,problem", [
    ('{"conversations": []}', "needs the video file"),
    ('{"path": "a.mp4", "conversations": [{"role": "user", "content": "hi"}]}', "alternate user, assistant"),
    ('{"path": "a.mp4", "start": 5, "end": 2, "conversations": []}', "must come after start"),
    ('{"path": "a.mp4", "conversations": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}',
     "needs a role"),
    ("not json", "not valid JSON"),
])
def test_bad_instruction_lines_name_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"path": "ok.mp4", "conversations": [{"role": "user", "content": "q"}, '
                    '{"role": "assistant", "content": "a"}]}\n\n' + line + "\n")
    with pytest.raises(ChatDataError, match=rf"{path}:3: .*{problem}"):
        read_instructions(path)


def test_long_samples_lose_their_last_turns(toy_chat: ToyChat, tmp_path: Path) -> None:
    clip = toy_chat.held_out[0][0]
    turns = []
    for index in range(6):
        turns += [{"role": "user", "content": f"Tell me more about it {index}."},
                  {"role": "assistant", "content": "The video is red."}]
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"path": str(clip), "start": 0.5, "end": 1.5, "conversations": turns}) + "\n")
    full = build_datasets(chat_config(tmp_path, toy_chat.llm, toy_chat.vit, rows)).train[0]
    short = build_datasets(chat_config(tmp_path, toy_chat.llm, toy_chat.vit, rows, max_length=200)).train[0]
    assert len(full["input_ids"]) > 200 >= len(short["input_ids"]) > 100
    tiny = build_datasets(chat_config(tmp_path, toy_chat.llm, toy_chat.vit, rows, max_length=30)).train[0]
    assert isinstance(tiny, SkippedVideo) and "more than max_length 30" in tiny.reason


def test_config_from_yaml_and_its_errors(tmp_path: Path) -> None:
    path = tmp_path / "chat.yaml"
    path.write_text(f"""
output_dir: {tmp_path / 'run'}
model: fluxvit_tiny_patch14
data: {{train: {tmp_path / 'train.jsonl'}, batch_size: 4}}
chat: {{llm: {tmp_path / 'llm'}, vision: fluxvit_tiny_patch14, budget: 128, tokens_per_frame: 16, lora: true}}
""")
    cfg = load_config(path, ChatConfig)
    assert cfg.optim.lr == 1e-3 and cfg.chat.lora and cfg.chat.lora_rank == 16 and cfg.chat.projector == "linear"
    path.write_text(path.read_text() + "init_checkpoint: vit.pt\n")
    with pytest.raises(ConfigError, match="chat.vision"):
        load_config(path, ChatConfig)
    path.write_text(f"output_dir: x\ndata: {{train: t.jsonl}}\nchat: {{llm: l, vision: v, projector: conv}}\n")
    with pytest.raises(ConfigError, match="chat.projector"):
        load_config(path, ChatConfig)


def test_the_training_engine_runs_checkpoints_and_resumes_the_recipe(toy_chat: ToyChat, tmp_path: Path) -> None:
    base = chat_config(tmp_path, toy_chat.llm, toy_chat.vit, toy_chat.train).model_dump(mode="json")
    base.update(max_steps=4, epochs=10, save_every=2, log_every=1)
    cfg = ChatConfig.model_validate(base)
    data = build_datasets(cfg)
    Trainer(cfg, build_recipe(cfg), data.train, data.collate).fit()
    stored = torch.load(checkpoint_files(cfg.output_dir)[-1], map_location="cpu", weights_only=False)
    assert set(stored["recipe"]) == {"projector.norm.weight", "projector.norm.bias", "projector.net.weight",
                                     "projector.net.bias"}  # the ViT and LLM are not stored
    cfg = ChatConfig.model_validate({**base, "max_steps": 6})
    recipe = build_recipe(cfg)
    trainer = Trainer(cfg, recipe, data.train, data.collate)
    assert trainer.resume() and trainer.state.step == 4
    torch.testing.assert_close(recipe.projector.net.weight.cpu(), stored["recipe"]["projector.net.weight"])
    trainer.fit()
    losses = [json.loads(line)["loss"] for line in (cfg.output_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 6 and losses[-1] < losses[0]
    recipe.export(cfg.output_dir)
    assert read_projector_info(cfg.output_dir / "projector.safetensors").budget == BUDGET


@pytest.mark.parametrize("train_llm", [False, True])
def test_bf16_autocast_keeps_a_trained_llm_in_fp32_master_weights(
        toy_chat: ToyChat, tmp_path: Path, train_llm: bool) -> None:
    """Under bf16 a frozen LLM is stored in bf16 (half the memory); a trained one stays fp32, so AdamW's small
    updates are not rounded away, and autocast still computes its matmuls in bf16."""
    base = chat_config(tmp_path, toy_chat.llm, toy_chat.vit, toy_chat.train, train_llm=train_llm)
    raw = base.model_dump(mode="json")
    raw.update(precision="bf16", max_steps=4, epochs=10, log_every=1, save_every=100)
    cfg = ChatConfig.model_validate(raw)
    recipe, data = build_recipe(cfg), build_datasets(cfg)
    assert {p.dtype for p in recipe.llm.parameters()} == {torch.float32 if train_llm else torch.bfloat16}
    before = {n: p.detach().clone() for n, p in recipe.llm.named_parameters()}
    Trainer(cfg, recipe, data.train, data.collate).fit()
    losses = [json.loads(line)["loss"] for line in (cfg.output_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    changed = [n for n, p in recipe.llm.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert bool(changed) == train_llm


@pytest.mark.gpu
def test_deterministic_cuda_runs_train_bit_identical_projectors(toy_chat: ToyChat, tmp_path: Path) -> None:
    """On CUDA in bf16 every kernel of the step (the LM's too) must have a deterministic version, or the run
    stops. (On CPU these runs agree even without the setting, so the check belongs to a GPU.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        weights = []
        for name in ("a", "b"):
            base = chat_config(tmp_path / name, toy_chat.llm, toy_chat.vit, toy_chat.train).model_dump(mode="json")
            base.update(max_steps=4, epochs=10, log_every=1, deterministic=True)
            cfg = ChatConfig.model_validate(base)
            data = build_datasets(cfg)
            torch.manual_seed(0)
            recipe = build_recipe(cfg)
            Trainer(cfg, recipe, data.train, data.collate).fit()
            weights.append({k: v.detach().cpu().clone() for k, v in recipe.trainable_state_dict().items()})
    finally:
        torch.set_num_threads(threads)
    assert weights[0].keys() == weights[1].keys() and weights[0]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_the_train_chat_command_writes_the_file_the_docs_name(toy_chat: ToyChat, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from training.cli import app

    cfg = ChatConfig.model_validate({**chat_config(tmp_path, toy_chat.llm, toy_chat.vit, toy_chat.train).model_dump(
        mode="json"), "max_steps": 2, "output_dir": str(tmp_path / "run")})
    result = CliRunner().invoke(app, ["chat", "--config", str(_yaml(tmp_path, cfg))])
    assert result.exit_code == 0, result.output
    assert read_projector_info(tmp_path / "run" / "projector.safetensors").budget == BUDGET
    assert not (tmp_path / "run" / "projector").exists()


def test_the_demo_ships_a_projector_with_both_vits_it_names_beside_it(toy_chat: ToyChat, tmp_path: Path) -> None:
    from app.demo.shipped import CHAT_SCENE_VISION, CHAT_VISION, PROJECTOR
    from app.demo.train import ship_projector

    cfg = chat_config(tmp_path, toy_chat.llm, toy_chat.vit, toy_chat.train, train_vision="second",
                      second_vision=str(toy_chat.vit))
    recipe, _ = train_projector(cfg, steps=1)
    run, staging = tmp_path / "run", tmp_path / "staging"
    run.mkdir(), staging.mkdir()
    recipe.export(run)
    assert read_projector_info(run / PROJECTOR).vision == str(toy_chat.vit.resolve())  # the frozen first, by path
    ship_projector(run / PROJECTOR, staging)
    info = read_projector_info(staging / PROJECTOR)
    assert (info.vision, info.second_vision) == (CHAT_VISION, CHAT_SCENE_VISION)
    assert (staging / CHAT_VISION).read_bytes() == toy_chat.vit.read_bytes()
    assert (staging / CHAT_SCENE_VISION).read_bytes() == (run / CHAT_SCENE_VISION).read_bytes()
    shutil.rmtree(run)  # the shipped folder stands alone
    model = ChatModel.load(staging / PROJECTOR)
    trained = dict(recipe.vision.second.named_parameters())
    assert all(torch.equal(trained[n], p) for n, p in model.vision.second.named_parameters())
    projected = recipe.projector.state_dict()
    assert all(torch.equal(value, projected[name]) for name, value in model.projector.state_dict().items())
