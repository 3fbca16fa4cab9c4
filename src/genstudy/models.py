"""Builders for the study's MLPs and convnets.

Every layer has a name (``fc1``, ``act1``, ``conv2``, ``pool2`` ...), so probes
and transfer can address a layer by name. Models return logits; the softmax
lives in the loss.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "selu": nn.SELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
INITS = ("torch", "he_normal", "lecun_normal", "glorot_uniform")


def init_weights(model: nn.Module, init: str) -> nn.Module:
    """Re-initialise Linear/Conv weights (Keras' named initialisers; biases to zero)."""
    if init == "torch":
        return model
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; known: {', '.join(INITS)}")
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            if init == "he_normal":
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            elif init == "lecun_normal":
                nn.init.kaiming_normal_(m.weight, nonlinearity="linear")
            else:
                nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def mlp(sizes: list[int], activation: str = "relu", dropout: float = 0.0,
        alpha_dropout: bool = False, init: str = "torch") -> nn.Sequential:
    """MLP ``sizes[0]-...-sizes[-1]`` on flattened input.

    ``dropout > 0`` puts a dropout layer before every dense layer (as the
    Keras regularization notebook does); ``alpha_dropout`` makes it
    AlphaDropout, the variant that keeps SELU's self-normalisation.
    """
    layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
    n = len(sizes) - 1
    for i in range(1, n + 1):
        if dropout > 0:
            layers.append((f"drop{i}", (nn.AlphaDropout if alpha_dropout else nn.Dropout)(dropout)))
        layers.append((f"fc{i}", nn.Linear(sizes[i - 1], sizes[i])))
        if i < n:
            layers.append((f"act{i}", ACTIVATIONS[activation]()))
    return init_weights(nn.Sequential(OrderedDict(layers)), init)


def convnet_e2() -> nn.Sequential:
    """E2's convnet: Conv 64 3x3, pool, Conv 64 3x3, pool, Dense 64, Dense 10 (logits)."""
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 64, 3)), ("act1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(64, 64, 3)), ("act2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(64 * 5 * 5, 64)), ("act3", nn.ReLU()),
        ("fc2", nn.Linear(64, 10)),
    ]))


def seeded(seed: int, build, *args, **kwargs) -> nn.Module:
    """``build(*args, **kwargs)`` with its initial weights drawn from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build(*args, **kwargs)
