"""Flux-CLIP dual encoder: embeddings, identity, self-describing files, and the InternVideo2 CLIP loader
(tested on a state dict written in the release's key names from our own tiny model)."""

from __future__ import annotations

import json

from pathlib import Path

import pytest
import torch

from encoder import create_model, save_checkpoint
from encoder.checkpoint import CheckpointError
from retrieval.dual_encoder import DualEncoder, build_dual_encoder
from retrieval.internvideo2 import load_internvideo2_clip

TINY_TEXT = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}
NO_FLUX = {"use_gpe": False, "use_lpe": False, "use_dpn": False, "img_size": 56, "num_frames": 4}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**vision) -> DualEncoder:
    return build_dual_encoder("fluxvit_tiny_patch14", TINY_TEXT, embed_dim=24,
                              **{"img_size": 56, "num_frames": 8, **vision}).eval()


def test_embeddings_are_unit_vectors_in_the_shared_space() -> None:
    model = tiny()
    video = torch.randn(3, 3, 4, 56, 56)
    with torch.no_grad():
        v, t = model.encode_video(video, keep_tokens=32), model.encode_text(["a cat", "two dogs play", "rain"])
    assert model.dim == 24 and v.shape == t.shape == (3, 24)
    assert torch.allclose(v.norm(dim=-1), torch.ones(3)) and torch.allclose(t.norm(dim=-1), torch.ones(3))
    tokens = model.tokenize(["word " * 40])
    assert tokens.shape == (1, 16), "long captions are truncated to the context length"
    with pytest.raises(TypeError, match="list of strings"):
        model.encode_text("a cat")


def test_default_text_tower_is_mobileclip_b() -> None:
    model = build_dual_encoder("fluxvit_tiny_patch14")
    text = model.text
    assert (text.width, len(text.transformer.resblocks), text.context_length) == (512, 12, 77)
    assert text.attn_mask is not None, "MobileCLIP-B's text tower is causal"
    assert model.config.text_name == "MobileCLIP-B" and model.dim == 512
    assert model.temp.item() == pytest.approx(0.07)


def test_save_load_round_trip_and_model_id(tmp_path: Path) -> None:
    model = tiny()
    model.save(tmp_path / "clip.pt", note="unit test")
    assert [p.name for p in tmp_path.iterdir()] == ["clip.pt"], "no temporary file left behind"
    loaded = DualEncoder.load(tmp_path / "clip.pt")
    video = torch.randn(2, 3, 4, 56, 56)
    with torch.no_grad():
        assert torch.equal(loaded.encode_video(video), model.encode_video(video))
        assert torch.equal(loaded.encode_text(["x y"]), model.encode_text(["x y"]))
    assert loaded.model_id == model.model_id and loaded.model_id.startswith("fluxclip-")
    assert tiny().model_id != model.model_id, "other weights, other id"
    before = loaded.model_id
    with torch.no_grad():
        loaded.vision_align[1].bias.add_(1e-3)
    assert loaded.model_id != before, "in-place updates invalidate the cached id"


def test_half_precision_storage_halves_the_file_and_loads_back_in_fp32(tmp_path: Path) -> None:
    model = tiny()
    model.save(tmp_path / "fp32.pt")
    model.save(tmp_path / "fp16.pt", dtype=torch.float16)
    assert (tmp_path / "fp16.pt").stat().st_size < 0.6 * (tmp_path / "fp32.pt").stat().st_size
    loaded = DualEncoder.load(tmp_path / "fp16.pt")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    video = torch.randn(2, 3, 4, 56, 56)
    with torch.no_grad():
        exact, rounded = model.encode_video(video), loaded.encode_video(video)
        assert not torch.equal(exact, rounded) and torch.allclose(exact, rounded, atol=1e-2)
        assert torch.allclose(model.encode_text(["x y"]), loaded.encode_text(["x y"]), atol=1e-2)


def test_load_names_the_file_for_bad_inputs(tmp_path: Path) -> None:
    model = tiny()
    model.save(tmp_path / "good.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "good.pt").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cut.pt.*cannot be read"):
        DualEncoder.load(tmp_path / "cut.pt")
    save_checkpoint(create_model("fluxvit_tiny_patch14"), tmp_path / "vit.pt")
    with pytest.raises(CheckpointError, match="vit.pt.*not a Flux-CLIP dual-encoder file"):
        DualEncoder.load(tmp_path / "vit.pt")
    payload = torch.load(tmp_path / "good.pt")
    del payload["state_dict"]["vision_align.0.weight"]
    torch.save(payload, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="partial.pt.*missing keys.*vision_align.0.weight"):
        DualEncoder.load(tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="absent.pt.*does not exist"):
        DualEncoder.load(tmp_path / "absent.pt")


def internvideo2_state(model: DualEncoder) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The release's names, written out by hand: vision, align and temp; and Apple's MobileCLIP text names."""
    vision = {}
    for key, value in model.vision.state_dict().items():
        if key.startswith("clip_projector.0."):
            vision["vision_encoder.clip_projector." + key.removeprefix("clip_projector.0.")] = value
        elif not key.startswith(("clip_projector.", "fc_norm.", "final_clip_decoder_for_projs.")):
            vision["vision_encoder." + key] = value
    vision["vision_encoder.clip_decoder.0.head.weight"] = torch.zeros(3, 3)  # training-only, ignored
    vision["vision_align.0.weight"] = model.vision_align[0].weight
    vision["vision_align.0.bias"] = model.vision_align[0].bias
    vision["vision_align.1.weight"] = model.vision_align[1].weight
    vision["vision_align.1.bias"] = model.vision_align[1].bias
    vision["temp"] = torch.tensor(0.01)
    t = model.text
    text = {"text_encoder.embedding_layer.weight": t.token_embedding.weight,
            "text_encoder.positional_embedding.pos_embed.pos_embed": t.positional_embedding[None, None],
            "text_encoder.final_layer_norm.weight": t.ln_final.weight,
            "text_encoder.final_layer_norm.bias": t.ln_final.bias,
            "text_encoder.projection_layer": t.text_projection}
    for i, block in enumerate(t.transformer.resblocks):
        p = f"text_encoder.transformer.{i}."
        text |= {p + "pre_norm_mha.0.weight": block.ln_1.weight, p + "pre_norm_mha.0.bias": block.ln_1.bias,
                 p + "pre_norm_mha.1.qkv_proj.weight": block.attn.in_proj_weight,
                 p + "pre_norm_mha.1.qkv_proj.bias": block.attn.in_proj_bias,
                 p + "pre_norm_mha.1.out_proj.weight": block.attn.out_proj.weight,
                 p + "pre_norm_mha.1.out_proj.bias": block.attn.out_proj.bias,
                 p + "pre_norm_ffn.0.weight": block.ln_2.weight, p + "pre_norm_ffn.0.bias": block.ln_2.bias,
                 p + "pre_norm_ffn.1.weight": block.mlp.c_fc.weight, p + "pre_norm_ffn.1.bias": block.mlp.c_fc.bias,
                 p + "pre_norm_ffn.4.weight": block.mlp.c_proj.weight,
                 p + "pre_norm_ffn.4.bias": block.mlp.c_proj.bias}
    return ({k: v.detach().clone() for k, v in vision.items()}, {k: v.detach().clone() for k, v in text.items()})


def test_internvideo2_clip_checkpoint_loads_exactly(tmp_path: Path) -> None:
    source = tiny(**NO_FLUX)
    vision, text = internvideo2_state(source)
    torch.save({"module": vision | text}, tmp_path / "iv2_clip.pth")
    loaded = load_internvideo2_clip(tmp_path / "iv2_clip.pth", text=TINY_TEXT)

    config = loaded.config.vision
    assert config.name == "fluxvit_tiny_patch14"
    assert (config.use_gpe, config.use_lpe, config.use_dpn) == (False, False, False)
    assert (config.num_frames, config.img_size) == (4, 56), "grid read from pos_embed rows"
    assert loaded.temp.item() == pytest.approx(0.01) and loaded.dim == 24
    ours = loaded.state_dict()
    for key, value in source.state_dict().items():
        if key.startswith("vision.clip_projector."):
            head0 = "vision.clip_projector.0." + key.split(".", 3)[3]
            assert torch.equal(ours[key], source.state_dict()[head0]), key
        elif key == "temp" or key.startswith(("vision.fc_norm.", "vision.final_clip_decoder_for_projs.")):
            continue
        else:
            assert torch.equal(ours[key], value), key
    video = torch.randn(2, 3, 4, 56, 56)
    with torch.no_grad():
        expected = source.project_video(source.vision.encode(video, head=0).pooled)
        for head in (0, 1, 2):
            assert torch.allclose(loaded.encode_video(video, head=head), expected, atol=1e-6)
        caption = ["a person cooks"]
        assert torch.allclose(loaded.encode_text(caption), source.encode_text(caption), atol=1e-6)


def test_internvideo2_text_tower_from_a_separate_mobileclip_file(tmp_path: Path) -> None:
    source = tiny(**NO_FLUX)
    vision, text = internvideo2_state(source)
    torch.save(vision, tmp_path / "vision.pth")
    torch.save(text | {"image_encoder.stem.weight": torch.zeros(1), "logit_scale": torch.tensor(4.6)},
               tmp_path / "mobileclip.pt")
    loaded = load_internvideo2_clip(tmp_path / "vision.pth", text_path=tmp_path / "mobileclip.pt", text=TINY_TEXT)
    assert torch.equal(loaded.text.transformer.resblocks[1].attn.in_proj_weight,
                       source.text.transformer.resblocks[1].attn.in_proj_weight)

    del vision["vision_encoder.blocks.0.attn.qkv.weight"]
    torch.save(vision, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match="broken.pth.*missing keys.*blocks.0.attn.qkv.weight"):
        load_internvideo2_clip(tmp_path / "broken.pth", text_path=tmp_path / "mobileclip.pt", text=TINY_TEXT)
    torch.save({"module": {"cls_token": torch.zeros(1, 1, 96)}}, tmp_path / "vit_only.pth")
    with pytest.raises(CheckpointError, match="vit_only.pth.*not an InternVideo2 CLIP checkpoint"):
        load_internvideo2_clip(tmp_path / "vit_only.pth", text=TINY_TEXT)
    torch.save({"x": torch.zeros(1)}, tmp_path / "no_text.pt")
    with pytest.raises(CheckpointError, match="no_text.pt.*no text tower"):
        load_internvideo2_clip(tmp_path / "vision.pth", text_path=tmp_path / "no_text.pt", text=TINY_TEXT)


def test_text_weights_load_from_an_open_clip_checkpoint(tmp_path: Path) -> None:
    source, target = tiny(), tiny()
    torch.save({"state_dict": {f"text.{k}": v for k, v in source.text.state_dict().items()}}, tmp_path / "oc.pt")
    target.load_text_weights(tmp_path / "oc.pt")
    with torch.no_grad():
        assert torch.equal(target.encode_text(["hello"]), source.encode_text(["hello"]))


def test_import_command_writes_a_dual_encoder_file_equal_to_the_release(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from app.cli import app

    source = tiny(**NO_FLUX)
    vision, text = internvideo2_state(source)
    torch.save({"module": vision | text}, tmp_path / "iv2_clip.pth")
    out = tmp_path / "models" / "iv2.pt"
    runner = CliRunner()
    done = runner.invoke(app, ["retrieval", "import-internvideo2", str(tmp_path / "iv2_clip.pth"), "--out", str(out),
                               "--text", json.dumps(TINY_TEXT)])
    assert done.exit_code == 0, done.output
    imported = DualEncoder.load(out)
    assert imported.model_id in done.output
    with torch.no_grad():
        assert torch.allclose(imported.encode_text(["a dog"]), source.encode_text(["a dog"]), atol=1e-6)
    torch.save({"module": text}, tmp_path / "text_only.pth")
    refused = runner.invoke(app, ["retrieval", "import-internvideo2", str(tmp_path / "text_only.pth"),
                                  "--out", str(tmp_path / "x.pt"), "--text", json.dumps(TINY_TEXT)])
    assert refused.exit_code == 2 and "text_only.pth" in refused.output and not (tmp_path / "x.pt").exists()

