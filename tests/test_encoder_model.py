"""FluxViT numerics against the released definition, API shapes, attention paths and precision."""

from __future__ import annotations

import pytest
import torch

from encoder import FluxViTConfig, create_model
from encoder.config import SamplingGrid
from encoder.layers import PatchEmbed
from tests.release_reference import patch_embed as reference_patch_embed
from tests.release_reference import release_forward

SMALL = FluxViTConfig(
    name="test_small", embed_dim=48, depth=2, num_heads=4, attn_pool_num_heads=4, clip_embed_dim=32,
    num_frames=4, img_size=56, num_classes=5, head_token_counts=(16, 64, 128),
    grid=SamplingGrid(min_frames=2, max_frames=8, min_resolution=28, max_resolution=70, token_threshold=(16, 256)),
)


def randomized_model(config: FluxViTConfig = SMALL, seed: int = 0) -> torch.nn.Module:
    """A model whose every parameter (norm weights, LayerScale, GPE/LPE maps too) is far from its init."""
    model = create_model(config, num_classes=config.num_classes).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            centred = name.endswith(("norm.weight", "norm1.weight", "norm2.weight", "norm_before.weight",
                                     "gamma", "depthwise_conv.weight")) or "norm1_" in name or "fc_norm.w" in name
            param.copy_(1.0 + 0.3 * noise if centred else 0.2 * noise)
    return model


def reference(model: torch.nn.Module, video: torch.Tensor, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = model.config
    return release_forward(
        model.state_dict(), video, patch=cfg.patch_size, tubelet=cfg.tubelet_size, t0=cfg.num_frames,
        g0=cfg.grid_size, depth=cfg.depth, heads=cfg.num_heads, pool_heads=cfg.attn_pool_num_heads, **kwargs,
    )


@pytest.mark.parametrize("frames,side", [(4, 56), (8, 70), (6, 42)])
@pytest.mark.parametrize("head", [0, 2])
def test_all_tokens_match_release_definition(frames: int, side: int, head: int) -> None:
    model = randomized_model()
    video = torch.randn(2, 3, frames, side, side)
    expected, expected_pooled = reference(model, video, output_head=head)
    with torch.no_grad():
        out = model.encode(video, head=head)
        logits = model(video, head=head)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.pooled, expected_pooled, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("frames,ratio", [(8, 0.5), (8, 0.75), (6, 0.6), (2, 0.5), (12, 0.8)])
def test_selector_matches_release_definition(frames: int, ratio: float) -> None:
    model = randomized_model(seed=1)
    video = torch.randn(3, 3, frames, 56, 56)
    expected, _ = reference(model, video, masking_ratio=ratio, output_head=1)
    per_frame = 16
    groups = 4 if frames % 4 == 0 else (1 if frames == 2 else 2)
    keep = groups * int((1 - ratio) * (frames // groups) * per_frame)
    with torch.no_grad():
        logits = model(video, keep_tokens=keep, head=1)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)


def test_patch_norm_folded_into_the_projection_trains_like_the_flattened_patches() -> None:
    """The folded Dual Patch Norm gives the release's tokens and the same gradients for its three weights."""
    torch.manual_seed(0)
    embed = PatchEmbed(patch_size=7, tubelet_size=2, in_chans=3, dim=16, use_dpn=True)
    with torch.no_grad():
        for param in embed.parameters():
            param.add_(0.3 * torch.randn_like(param))
    video = torch.randn(2, 3, 4, 21, 14)
    tokens = embed(video)
    expected = reference_patch_embed(dict(embed.named_parameters(prefix="patch_embed")), video, patch=7, tubelet=2)
    torch.testing.assert_close(tokens.reshape(expected.shape), expected, atol=1e-5, rtol=1e-5)
    upstream = torch.randn_like(expected)
    params = list(embed.parameters())
    ours = torch.autograd.grad(tokens.reshape(expected.shape), params, upstream)
    theirs = torch.autograd.grad(expected, params, upstream)
    for name, mine, ref in zip([n for n, _ in embed.named_parameters()], ours, theirs):
        torch.testing.assert_close(mine, ref, atol=1e-4, rtol=1e-4, msg=name)


def test_batch_of_one_equals_row_of_a_batch_and_odd_frames_work() -> None:
    model = randomized_model(seed=2)
    video = torch.randn(3, 3, 7, 42, 56)  # odd frame count, non-square input
    with torch.no_grad():
        batch = model.encode(video, keep_tokens=40)
        single = model.encode(video[1:2], keep_tokens=40)
    assert batch.positions.shape == (3, 40) and batch.tokens.shape == (3, 41, 48)
    torch.testing.assert_close(single.pooled, batch.pooled[1:2], atol=1e-5, rtol=1e-5)
    assert torch.equal(single.positions, batch.positions[1:2])


def test_eager_attention_path_equals_sdpa_and_returns_cls_attention() -> None:
    model = randomized_model(seed=3)
    video = torch.randn(2, 3, 4, 56, 56)
    with torch.no_grad():
        fused = model.encode(video, keep_tokens=30, num_hidden=2)
        eager = model.encode(video, keep_tokens=30, num_hidden=2, need_cls_attention=True)
    torch.testing.assert_close(eager.pooled, fused.pooled, atol=1e-5, rtol=1e-5)
    assert eager.cls_attention.shape == (2, 4, 31)
    torch.testing.assert_close(eager.cls_attention.sum(-1), torch.ones(2, 4))
    assert len(fused.hidden) == 2 and torch.equal(fused.hidden[-1], fused.tokens)


def test_head_defaults_to_regime_nearest_the_tokens_used() -> None:
    model = randomized_model(seed=4)
    video = torch.randn(1, 3, 8, 56, 56)  # pool of 128 tokens; heads trained for 16/64/128
    with torch.no_grad():
        assert model.encode(video, keep_tokens=20).head == 0
        assert model.encode(video, keep_tokens=70).head == 1
        assert model.encode(video).head == 2
        torch.testing.assert_close(model(video, keep_tokens=70), model(video, keep_tokens=70, head=1))


def test_explicit_positions_replace_the_selector() -> None:
    model = randomized_model(seed=5)
    video = torch.randn(2, 3, 4, 56, 56)
    positions = torch.tensor([[0, 5, 17, 63], [1, 2, 3, 60]])
    with torch.no_grad():
        out = model.encode(video, positions=positions)
        full = model.encode(video, keep_tokens=None)
    assert torch.equal(out.positions, positions)
    assert full.positions.shape == (2, 64)
    assert not torch.allclose(out.pooled, full.pooled)


def test_bf16_autocast_stays_close_to_float32() -> None:
    model = randomized_model(seed=6)
    video = torch.randn(2, 3, 8, 56, 56)
    with torch.no_grad():
        full = model.encode(video, keep_tokens=64).pooled
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model.encode(video, keep_tokens=64).pooled
    assert low.dtype == torch.bfloat16
    cos = torch.nn.functional.cosine_similarity(low.float(), full, dim=-1)
    assert cos.min() > 0.99


def test_modules_can_be_switched_off_for_the_plain_vit_baseline() -> None:
    plain = create_model(SMALL.replace(use_gpe=False, use_lpe=False, use_dpn=False), num_classes=5)
    keys = plain.state_dict().keys()
    assert not any("gpe_proj" in k or ".lpe." in k or "norm_before" in k or k == "patch_embed.norm.weight"
                   for k in keys)
    full_keys = create_model(SMALL, num_classes=5).state_dict().keys()
    assert {"gpe_proj.depthwise_conv.weight", "patch_embed.norm_before.weight",
            "blocks.0.attn.lpe.depthwise_conv.bias"} <= set(full_keys)
    with torch.no_grad():
        assert plain(torch.randn(1, 3, 4, 56, 56), keep_tokens=32).shape == (1, 5)


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    model = randomized_model(seed=7).train()
    video = torch.randn(2, 3, 4, 56, 56)
    model(video, keep_tokens=32).square().sum().backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(video, keep_tokens=32).square().sum().backward()
    assert plain, "no gradient reached the parameters"
    for name, grad in plain.items():
        torch.testing.assert_close(model.get_parameter(name).grad, grad, atol=1e-5, rtol=1e-4)


def test_registry_configs_have_the_released_shapes() -> None:
    small = create_model("fluxvit_small_patch14", num_classes=400).state_dict()
    assert small["pos_embed"].shape == (1, 7777, 384)
    assert small["patch_embed.proj.weight"].shape == (384, 3, 1, 14, 14)
    assert small["patch_embed.norm_before.weight"].shape == (588,)
    assert small["clip_projector.2.cross_attn.proj.weight"].shape == (768, 384)
    assert small["head.1.weight"].shape == (400, 768)
    assert small["final_clip_decoder_for_projs.1.head.weight"].shape == (768, 768)
    base = create_model("fluxvit_base_patch14").state_dict()
    assert base["pos_embed"].shape == (1, 12801, 768) and "head.0.weight" not in base


def test_bad_input_shapes_raise_clear_errors() -> None:
    model = randomized_model()
    with pytest.raises(ValueError, match="does not divide"):
        model(torch.randn(1, 3, 4, 50, 56))
    with pytest.raises(ValueError, match=r"expected video \[B, 3"):
        model(torch.randn(3, 4, 56, 56))
    with pytest.raises(ValueError, match="cannot keep"):
        model(torch.randn(1, 3, 4, 56, 56), keep_tokens=0)


@pytest.mark.gpu
def test_cuda_bf16_matches_cpu_float32() -> None:
    model = randomized_model(seed=8)
    video = torch.randn(2, 3, 8, 56, 56)
    with torch.no_grad():
        expected = model.encode(video, keep_tokens=64).pooled
        gpu = model.cuda()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            got = gpu.encode(video.cuda(), keep_tokens=64).pooled.float().cpu()
    assert torch.nn.functional.cosine_similarity(got, expected, dim=-1).min() > 0.99
