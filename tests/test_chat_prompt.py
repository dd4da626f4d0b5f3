"""Prompt building, the video placeholder, per-frame pooling, the projector file and load-time errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

from chat import ChatModel, GenerationSettings, Projector, ProjectorInfo, Session, load_projector, save_projector
from chat.errors import ChatError, LLMNotFoundError, ProjectorError
from chat.features import VisionFeatures
from chat.llm import VIDEO_TOKEN, load_llm, prepare_tokenizer, video_token_id
from chat.prompt import VideoContext, build_messages, encode_conversation, encode_prompt, expand_video, splice_video
from chat.vision import VisionTower, pool_per_frame
from encoder import create_model, plan
from tests.test_chat_support import (  # noqa: F401 (fixtures)
    QUESTION, ToyChat, _one_torch_thread, build_tokenizer, toy_chat,
)

CONTEXT = VideoContext(2.0, (0.2, 0.8, 1.2, 1.8))


def test_video_embeddings_land_at_the_placeholder_positions(toy_chat: ToyChat) -> None:
    model = ChatModel.load(toy_chat.projector)
    video, context = model.load_video(toy_chat.held_out[0][0])
    session = Session(model, GenerationSettings(max_new_tokens=16))
    session.load_video(toy_chat.held_out[0][0])
    ids = torch.tensor([session.prompt_ids(QUESTION)])
    table = model.llm.get_input_embeddings()
    embeds = splice_video(table, ids, video[None], model.video_id)[0]
    where = (ids[0] == model.video_id).nonzero()[:, 0]
    assert len(where) == model.num_video_tokens == 16
    assert torch.equal(where, torch.arange(where[0], where[0] + 16))  # one run, in clip order
    torch.testing.assert_close(embeds[where], video)
    others = ids[0] != model.video_id
    torch.testing.assert_close(embeds[others], table(ids[0][others]))
    before = model.tokenizer.decode(ids[0][:where[0]])
    after = model.tokenizer.decode(ids[0][where[-1] + 1:])
    assert before.endswith("<|im_start|>user\n")
    assert after.startswith(f"\nThe video lasts {context.duration:.1f} seconds. 4 frames were sampled at ")
    assert after.endswith(f"{QUESTION}<|im_end|>\n<|im_start|>assistant\n")


def test_placeholder_is_added_to_tokenizers_without_it(tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(build_tokenizer(tmp_path, video_token=False))
    vocab = len(tokenizer)
    assert len(tokenizer.encode(VIDEO_TOKEN, add_special_tokens=False)) > 1
    prepare_tokenizer(tokenizer, str(tmp_path))
    video_id = video_token_id(tokenizer)
    assert video_id == vocab  # outside a table built for the original vocabulary
    llm = Qwen2ForCausalLM(Qwen2Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                       num_attention_heads=2, num_key_value_heads=1))
    ids = torch.tensor([encode_prompt(tokenizer, build_messages(None, CONTEXT, [], QUESTION), video_id, 5)])
    video = torch.randn(1, 5, 32)
    embeds = splice_video(llm.get_input_embeddings(), ids, video, video_id)
    torch.testing.assert_close(embeds[ids == video_id], video[0])
    assert llm(inputs_embeds=embeds).logits.shape == (1, ids.shape[1], vocab)


def test_conversation_labels_cover_only_the_answers(toy_chat: ToyChat) -> None:
    tokenizer = load_llm(toy_chat.llm)[1]
    video_id = video_token_id(tokenizer)
    turns = [("What colour?", "The video is red."), ("Sure?", "The video is blue.")]
    ids, labels = encode_conversation(tokenizer, build_messages("Be brief.", CONTEXT, turns), video_id, 7)
    assert len(ids) == len(labels) and ids.count(video_id) == 7
    text = tokenizer.apply_chat_template(build_messages("Be brief.", CONTEXT, turns), tokenize=False)
    assert tokenizer.decode(ids).replace(VIDEO_TOKEN * 7, VIDEO_TOKEN) == text
    spans, current = [], []
    for token, label in zip(ids, labels):
        if label == -100:
            if current:
                spans.append(tokenizer.decode(current))
            current = []
        else:
            assert label == token
            current.append(token)
    spans.append(tokenizer.decode(current))
    assert spans == ["The video is red.<|im_end|>\n", "The video is blue.<|im_end|>\n"]


def test_prompt_states_duration_timestamps_and_segment() -> None:
    assert CONTEXT.describe() == (f"{VIDEO_TOKEN}\nThe video lasts 2.0 seconds. 4 frames were sampled at "
                                  "0.2s, 0.8s, 1.2s, 1.8s.")
    segment = VideoContext(10.0, (31.2, 36.2), start=30.0, end=40.0)
    assert "segment from 30.0s to 40.0s of a longer video (10.0 seconds). 2 frames were sampled at 31.2s, 36.2s" \
        in segment.describe()


def test_the_video_stays_in_the_first_remaining_user_turn_and_user_text_cannot_add_placeholders() -> None:
    messages = build_messages("sys", CONTEXT, [("a", "b"), ("c", "d")], f"e {VIDEO_TOKEN}")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert messages[1]["content"].startswith(VIDEO_TOKEN) and messages[1]["content"].endswith("\na")
    assert sum(m["content"].count(VIDEO_TOKEN) for m in messages) == 1
    assert expand_video([1, 9, 2], 9, 3) == [1, 9, 9, 9, 2]
    with pytest.raises(ChatError, match="2 video placeholders"):
        expand_video([9, 1, 9], 9, 3)


def _reference_pool(tokens, positions, grid, n):
    frames, height, width = grid
    side = int(n ** 0.5)
    out = torch.zeros(tokens.shape[0], frames * n, tokens.shape[-1])
    for b in range(tokens.shape[0]):
        for t in range(frames):
            frame = [k for k in range(tokens.shape[1]) if positions[b, k] // (height * width) == t]
            frame_mean = tokens[b, frame].mean(0) if frame else tokens[b].mean(0)
            for cell in range(n):
                members = [k for k in frame if (positions[b, k] % (height * width) // width * side // height) * side
                           + (positions[b, k] % width) * side // width == cell]
                out[b, t * n + cell] = tokens[b, members].mean(0) if members else frame_mean
    return out


@pytest.mark.parametrize("n", [1, 4, 9])
def test_pool_per_frame_matches_a_loop_and_fills_empty_cells(n: int) -> None:
    grid = (3, 6, 6)
    positions = torch.stack([torch.randperm(108)[:40].sort().values,
                             torch.cat([torch.arange(36, 72), torch.tensor([0, 1, 2, 3])]).sort().values])
    tokens = torch.randn(2, 40, 8)
    pooled = pool_per_frame(tokens, positions, grid, n)
    assert pooled.shape == (2, 3 * n, 8)
    torch.testing.assert_close(pooled, _reference_pool(tokens, positions, grid, n))
    # sample 1 kept nothing of frame 2: that frame takes the clip mean
    torch.testing.assert_close(pooled[1, 2 * n:], tokens[1].mean(0).expand(n, -1))


def test_token_count_follows_the_budget_and_pooling() -> None:
    vit = create_model("fluxvit_tiny_patch14").eval()
    for budget in (64, 128, 256):
        tower = VisionTower(vit, budget)
        sampling = plan(budget, vit.config)
        assert tower.num_tokens == sampling.tokens == budget
        video = torch.randn(1, 3, sampling.frames, sampling.resolution, sampling.resolution)
        assert tower(video).tokens.shape == (1, budget, 96) and tower(video).summary is None
        pooled = VisionTower(vit, budget, tokens_per_frame=16)
        assert pooled.num_tokens == sampling.frames * 16 and pooled(video).tokens.shape == (1, sampling.frames * 16, 96)
    with pytest.raises(ChatError, match="square number"):
        VisionTower(vit, 128, tokens_per_frame=10)
    with pytest.raises(ChatError, match="at least 8x8 patches"):
        VisionTower(vit, 128, tokens_per_frame=64)  # 84 px -> 6x6 patches
    with pytest.raises(ValueError, match="expects video"):
        VisionTower(vit, 128)(torch.randn(1, 3, 8, 84, 84))


def test_a_second_vit_encodes_the_tokens_the_first_kept_and_follows_its_channels() -> None:
    torch.manual_seed(0)
    first, second = create_model("fluxvit_tiny_patch14").eval(), create_model("fluxvit_tiny_patch14").eval()
    budget = 128
    sampling = plan(budget, first.config)
    video = torch.randn(2, 3, sampling.frames, sampling.resolution, sampling.resolution)
    alone, both = VisionTower(first, budget), VisionTower(first, budget, second=second)
    assert both.dim == 192 and both.num_tokens == alone.num_tokens
    features = both(video).tokens
    torch.testing.assert_close(features[..., :96], alone(video).tokens)
    kept = first.encode(video, keep_tokens=sampling.keep_tokens).positions
    own = second.encode(video, keep_tokens=sampling.keep_tokens).positions
    assert not torch.equal(kept, own)  # left to itself the second ViT would keep other tokens
    torch.testing.assert_close(features[..., 96:], second.encode(video, positions=kept).tokens[:, 1:])
    smaller = both.at(64)
    assert smaller.second is second and smaller.plan.budget == 64 and smaller(video[:, :, :smaller.plan.frames]
                                                                               ).tokens.shape[-1] == 192
    with pytest.raises(ChatError, match="same tokens"):
        VisionTower(first, budget, second=create_model("fluxvit_tiny_patch14", tubelet_size=2))


def test_a_summary_ends_the_video_with_both_vits_pooled_features(tmp_path: Path) -> None:
    torch.manual_seed(0)
    first, second = create_model("fluxvit_tiny_patch14").eval(), create_model("fluxvit_tiny_patch14").eval()
    budget = 128
    sampling = plan(budget, first.config)
    video = torch.randn(2, 3, sampling.frames, sampling.resolution, sampling.resolution)
    plain = VisionTower(first, budget, tokens_per_frame=16, second=second)
    tower = VisionTower(first, budget, tokens_per_frame=16, second=second, summary=True)
    assert (tower.num_tokens, tower.summary_dim, plain.summary_dim) == (plain.num_tokens + 1, 256, 0)
    assert tower.at(64).summary and tower.at(64).num_tokens == plain.at(64).num_tokens + 1
    features = tower(video)
    torch.testing.assert_close(features.tokens, plain(video).tokens)
    out = first.encode(video, keep_tokens=sampling.keep_tokens)
    torch.testing.assert_close(features.summary, torch.cat([out.pooled, second.encode(video, positions=out.positions
                                                                                      ).pooled], dim=-1))
    projector = Projector("mlp2", 192, 64, summary_dim=256)
    embeds = projector(features)
    assert embeds.shape == (2, tower.num_tokens, 64)
    torch.testing.assert_close(embeds[:, :-1], projector.net(projector.norm(features.tokens)))
    torch.testing.assert_close(embeds[:, -1], projector.summary(projector.summary_norm(features.summary)))
    with pytest.raises(ProjectorError, match="gave none"):
        projector(plain(video))
    info = ProjectorInfo("mlp2", 192, 64, "vit.pt", "fluxvit_tiny_patch14", "llm", 128, 16, summary_dim=256)
    loaded, loaded_info = load_projector(save_projector(projector, info, tmp_path / "p.safetensors"))
    assert loaded_info.summary_dim == 256
    torch.testing.assert_close(loaded(features), embeds)
    with pytest.raises(ProjectorError, match="takes a 256-d summary but the ViT v.pt gives 0-d"):
        info.check_fits(192, 64, "v.pt", "llm", summary_dim=0)


@pytest.mark.parametrize("kind", ["linear", "mlp2"])
def test_projector_round_trip(tmp_path: Path, kind: str) -> None:
    projector = Projector(kind, 96, 64)
    info = ProjectorInfo(kind, 96, 64, "vit.pt", "fluxvit_tiny_patch14", "llm", 128, 4)
    path = save_projector(projector, info, tmp_path / "p.safetensors")
    loaded, loaded_info = load_projector(path)
    assert loaded_info == info and not list(tmp_path.glob("*.tmp"))
    features = VisionFeatures(torch.randn(2, 5, 96))
    torch.testing.assert_close(loaded(features), projector(features))
    with pytest.raises(ProjectorError, match="unknown projector kind"):
        Projector("conv", 96, 64)


def _projector_file(tmp_path: Path, toy_chat: ToyChat, vision_dim: int, llm_dim: int) -> Path:
    info = ProjectorInfo("linear", vision_dim, llm_dim, str(toy_chat.vit), "fluxvit_tiny_patch14", str(toy_chat.llm),
                         128, 4)
    return save_projector(Projector("linear", vision_dim, llm_dim), info, tmp_path / "p.safetensors")


def test_clear_errors_at_load(toy_chat: ToyChat, tmp_path: Path) -> None:
    with pytest.raises(ProjectorError, match="takes 384-d vision features but the ViT .* gives 96-d"):
        ChatModel.load(_projector_file(tmp_path, toy_chat, 384, 64))
    with pytest.raises(ProjectorError, match="outputs 896-d embeddings but the LLM .* takes 64-d"):
        ChatModel.load(_projector_file(tmp_path, toy_chat, 96, 896))
    with pytest.raises(LLMNotFoundError, match="LLM folder .*nowhere does not exist"):
        ChatModel.load(toy_chat.projector, llm=str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(LLMNotFoundError, match="has no config.json"):
        ChatModel.load(toy_chat.projector, llm=str(tmp_path / "empty"))
    with pytest.raises(ProjectorError, match="does not exist"):
        ChatModel.load(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ProjectorError, match="not a safetensors file"):
        ChatModel.load(tmp_path / "junk.safetensors")
    with pytest.raises(ChatError, match="neither a FluxViT checkpoint file nor a registered model"):
        ChatModel.load(toy_chat.projector, vision="no_such_vit")
