"""Checkpoint loading: released layouts, FluxVid round trips and every error case."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from encoder import CheckpointError, create_model, load_checkpoint, load_model, save_checkpoint
from encoder.posembed import resize_grid
from tests.test_encoder_model import SMALL, randomized_model


def test_fluxvid_round_trip_rebuilds_the_model_from_the_file(tmp_path: Path) -> None:
    model = randomized_model()
    path = tmp_path / "model.pt"
    save_checkpoint(model, path, class_names=["a", "b", "c", "d", "e"])
    loaded, metadata = load_model(path)
    assert metadata["class_names"] == ["a", "b", "c", "d", "e"]
    assert loaded.config == model.config
    video = torch.randn(1, 3, 8, 56, 56)
    with torch.no_grad():
        torch.testing.assert_close(loaded(video, keep_tokens=40), model(video, keep_tokens=40))
    assert not list(tmp_path.glob("*.tmp")), "no temporary file may be left behind"


@pytest.mark.parametrize("wrapper", [None, "module", "model"])
def test_released_layout_loads_with_wrappers_and_ddp_prefixes(tmp_path: Path, wrapper: str | None) -> None:
    source = randomized_model(seed=3)
    state = source.state_dict()
    if wrapper == "module":
        state = {f"module.{k}": v for k, v in state.items()}
    payload = state if wrapper is None else {wrapper: state, "epoch": 7}
    path = tmp_path / "release.pth"
    torch.save(payload, path)
    target = create_model(SMALL, num_classes=5)
    report = load_checkpoint(target, path)
    assert report.missing == [] and report.unexpected == [] and report.resized == []
    for name, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[name], value), name


def test_stored_positional_grid_is_resized_to_the_model(tmp_path: Path) -> None:
    source = randomized_model(seed=4)
    state = source.state_dict()
    bigger = resize_grid(state["pos_embed"][0, 1:].reshape(4, 4, 4, 48), 6, 5, 5).reshape(-1, 48)
    state["pos_embed"] = torch.cat([state["pos_embed"][0, :1], bigger])[None]  # stored for 6 frames x 70 px
    path = tmp_path / "bigger_grid.pth"
    torch.save({"model": state}, path)
    target = create_model(SMALL, num_classes=5)
    report = load_checkpoint(target, path)
    assert report.resized == ["pos_embed"]
    loaded = target.state_dict()["pos_embed"]
    assert loaded.shape == (1, 65, 48)
    expected = resize_grid(bigger.reshape(6, 5, 5, 48), 4, 4, 4).reshape(-1, 48)
    torch.testing.assert_close(loaded[0, 1:], expected)
    torch.testing.assert_close(loaded[0, 0], state["pos_embed"][0, 0])


def test_truncated_and_garbage_files_name_the_file(tmp_path: Path) -> None:
    good = tmp_path / "good.pth"
    torch.save(randomized_model().state_dict(), good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"definitely not a checkpoint" * 10)
    model = create_model(SMALL, num_classes=5)
    for path in (truncated, garbage):
        with pytest.raises(CheckpointError, match=f"checkpoint {path}: cannot be read") as info:
            load_checkpoint(model, path)
        assert info.value.path == str(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(model, tmp_path / "missing.pth")


def test_wrong_model_lists_shape_clashes_and_missing_keys(tmp_path: Path) -> None:
    path = tmp_path / "small.pth"
    torch.save(randomized_model().state_dict(), path)
    other = create_model(SMALL.replace(embed_dim=64, depth=3), num_classes=5)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(other, path)
    message = str(info.value)
    assert "missing keys" in message and "blocks.2." in message
    assert "shape clashes" in message and "cls_token: checkpoint (1, 1, 48) vs model (1, 1, 64)" in message


def test_head_mismatch_gives_a_hint_and_non_strict_loading_reports(tmp_path: Path) -> None:
    path = tmp_path / "k5.pth"
    source = randomized_model()
    torch.save(source.state_dict(), path)
    headless = create_model(SMALL, num_classes=0)
    with pytest.raises(CheckpointError, match="hint: create the model with num_classes"):
        load_checkpoint(headless, path)
    report = load_checkpoint(headless, path, strict=False)
    assert report.unexpected == ["head.0.bias", "head.0.weight", "head.1.bias", "head.1.weight",
                                 "head.2.bias", "head.2.weight"]
    torch.testing.assert_close(headless.state_dict()["blocks.1.mlp.fc2.weight"],
                               source.state_dict()["blocks.1.mlp.fc2.weight"])


def test_released_file_without_config_needs_a_name(tmp_path: Path) -> None:
    path = tmp_path / "tiny.pth"
    tiny = create_model("fluxvit_tiny_patch14", num_classes=7)
    torch.save({"module": tiny.state_dict()}, path)
    with pytest.raises(CheckpointError, match="pass the model name"):
        load_model(path)
    loaded, _ = load_model(path, name="fluxvit_tiny_patch14")
    assert loaded.num_classes == 7 and not loaded.training
