"""Input conventions shared by every model and loader: the one place that defines them.

The released FluxViT / InternVideo2 / UMT checkpoints were trained on RGB frames scaled to [0, 1] and
normalised with the ImageNet statistics below; tensors are laid out as ``[B, 3, T, H, W]``.
"""

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
CHANNEL_ORDER = "RGB"
