"""Pieces shared by the zoo: d2l's initialisation and the LazyLinear-equivalent head sizing."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["InputTooSmallError", "init_cnn", "flat_features", "leaf_tracker"]


class InputTooSmallError(ValueError):
    """The input is too small for some layer: its feature map would shrink below 1x1."""

    def __init__(self, size: int, layer: str, detail: str):
        self.size = size
        self.layer = layer
        self.detail = detail
        super().__init__(f"input {size}x{size} is too small at layer '{layer}': {detail}")


def init_cnn(module: nn.Module) -> None:
    """Xavier-uniform on every Conv2d and Linear weight, as ``d2l.init_cnn`` does.

    Biases keep PyTorch's default initialisation, as in the book.
    """
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.xavier_uniform_(module.weight)


class leaf_tracker:
    """Context manager that remembers the last leaf module entered during a forward pass.

    When a forward raises, ``last`` names the layer that raised; that is how a too-small input
    is reported as "which layer fails", not as a bare shape error.
    """

    def __init__(self, model: nn.Module, prefix: str = ""):
        self.model = model
        self.prefix = prefix
        self.last = "<input>"
        self._handles: list = []

    def __enter__(self) -> leaf_tracker:
        for name, mod in self.model.named_modules():
            if not any(True for _ in mod.children()):
                full = f"{self.prefix}.{name}" if self.prefix else name
                self._handles.append(mod.register_forward_pre_hook(self._hook(full)))
        return self

    def _hook(self, name: str) -> Callable:
        def hook(_mod, _inputs):
            self.last = name

        return hook

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()


def flat_features(make_features: Callable[[], nn.Module], in_channels: int, image_size: int) -> int:
    """Width of the flattened feature map at ``image_size``: what ``nn.LazyLinear`` would infer.

    The feature stack is built a second time on the meta device, so this costs no memory and
    no arithmetic, yet goes through the same layers (and the same shape checks) as the real one.
    """
    with torch.device("meta"):
        probe = make_features()
        x = torch.empty(1, in_channels, image_size, image_size)
        with leaf_tracker(probe) as tracker:
            try:
                y = probe(x)
            except (RuntimeError, ValueError) as err:
                raise InputTooSmallError(image_size, tracker.last, str(err)) from None
    return y[0].numel()
