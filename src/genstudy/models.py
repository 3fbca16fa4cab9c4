"""Builders for the study's MLPs and convnets.

Every layer has a name (``fc1``, ``act1``, ``conv2``, ``pool2`` ...), so probes
and transfer can address a layer by name. Models return logits; the softmax
lives in the loss.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
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


def convnet_e2(plain: bool = False) -> nn.Sequential:
    """E2's convnet: Conv 64 3x3, pool, Conv 64 3x3, pool, Dense 64, Dense 10 (logits).

    By default the fast module :class:`ConvNetE2` (same function, same state_dict keys);
    ``plain=True`` builds the layers in the notebook's order and memory layout (the reference).
    """
    if not plain:
        return ConvNetE2()
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 64, 3)), ("act1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(64, 64, 3)), ("act2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(64 * 5 * 5, 64)), ("act3", nn.ReLU()),
        ("fc2", nn.Linear(64, 10)),
    ]))


class ConvNetE2(nn.Sequential):
    """E2's convnet computed faster on the CPU, the same function as ``convnet_e2(plain=True)``.

    Two changes, both exact (benchmarks/PROFILE_E2.md has the measurements):

    * pool before ReLU: max-pooling commutes with a monotone activation, so
      relu(maxpool(z)) == maxpool(relu(z)), and the ReLU (and its backward) touches a quarter
      of the elements. The gradient goes to the same element of each window (ties: the first
      in both orders, and ReLU's gradient at 0 is 0 either way).
    * channels_last: the conv weights are stored NHWC, so oneDNN's convolutions read and write
      NHWC without reordering, and max_pool2d's NHWC kernel is vectorised over the 64 channels
      (its NCHW kernel walks 2x2 windows one plane at a time and was 18 % of the plain step).
      Flatten reshapes to the (C, H, W) order, so fc1 sees exactly the plain model's features.

    Same parameter names and shapes as the plain model (conv1.weight ... fc2.bias): state
    dicts load both ways. The modules keep their names, in the order they run.
    """

    def __init__(self):
        super().__init__(OrderedDict([
            ("conv1", nn.Conv2d(1, 64, 3)), ("pool1", nn.MaxPool2d(2)), ("act1", nn.ReLU()),
            ("conv2", nn.Conv2d(64, 64, 3)), ("pool2", nn.MaxPool2d(2)), ("act2", nn.ReLU()),
            ("flatten", nn.Flatten()),
            ("fc1", nn.Linear(64 * 5 * 5, 64)), ("act3", nn.ReLU()),
            ("fc2", nn.Linear(64, 10)),
        ]))
        # NHWC conv weights make every conv output NHWC (the 1-channel input is both layouts).
        self.to(memory_format=torch.channels_last)

    def logits_and_input_vjp(self, x: torch.Tensor):
        """The logits, and a function ``dz -> dlogits/dx^T dz`` built from forward ops.

        For the gradient loss: autograd's double backward of a convolution transposes batch
        and channels (copies that cost 10x more in NHWC than the convolutions themselves);
        written as forward ops (linear maps, ReLU masks, unpooling, transposed convolutions),
        the VJP differentiates with the ordinary, fast backward kernels. The masks and pool
        indices are constants: ReLU and max are piecewise linear.
        """
        z1 = self.conv1(x)
        m1, i1 = F.max_pool2d(z1, 2, return_indices=True)
        z2 = self.conv2(m1.relu())
        m2, i2 = F.max_pool2d(z2, 2, return_indices=True)
        a3 = self.fc1(self.flatten(m2.relu()))
        logits = self.fc2(a3.relu())

        def vjp(dz: torch.Tensor) -> torch.Tensor:
            g = (dz @ self.fc2.weight) * (a3 > 0)
            g = (g @ self.fc1.weight).view(m2.shape) * (m2 > 0)
            g = F.conv_transpose2d(F.max_unpool2d(g, i2, 2, output_size=z2.shape[-2:]), self.conv2.weight)
            g = F.max_unpool2d(g * (m1 > 0), i1, 2, output_size=z1.shape[-2:])
            return F.conv_transpose2d(g, self.conv1.weight)
        return logits, vjp


def keskar_f1(depth: int = 5, width: int = 512, in_features: int = 784,
              classes: int = 10) -> nn.Sequential:
    """Keskar et al.'s (2017) network F1: ``depth`` hidden layers of ``width`` units, each
    Linear (``fc{i}``), BatchNorm1d (``bn{i}``), ReLU (``act{i}``); then ``fc{depth+1}`` (logits)."""
    layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
    fan_in = in_features
    for i in range(1, depth + 1):
        layers += [(f"fc{i}", nn.Linear(fan_in, width)), (f"bn{i}", nn.BatchNorm1d(width)),
                   (f"act{i}", nn.ReLU())]
        fan_in = width
    layers.append((f"fc{depth + 1}", nn.Linear(fan_in, classes)))
    return nn.Sequential(OrderedDict(layers))


def seeded(seed: int, build, *args, **kwargs) -> nn.Module:
    """``build(*args, **kwargs)`` with its initial weights drawn from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build(*args, **kwargs)


# --- E7: linear classifier probes (Alain & Bengio 2016) -------------------------------

def convnet_e7(dropout: float = 0.0) -> nn.Sequential:
    """Figure 5's convnet (TensorFlow's MNIST example): Conv 32 5x5 same, ReLU, MaxPool 2,
    Conv 64 5x5 same, ReLU, MaxPool 2, Dense 512 ReLU, [Dropout], Dense 10 (logits)."""
    head = [("drop3", nn.Dropout(dropout))] if dropout > 0 else []
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 32, 5, padding=2)), ("act1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(32, 64, 5, padding=2)), ("act2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(64 * 7 * 7, 512)), ("act3", nn.ReLU()), *head,
        ("fc2", nn.Linear(512, 10)),
    ]))


# Probe point -> the module whose output it reads ("" is the model's input), in forward order.
CONVNET_E7_POINTS = {
    "input": "", "conv1_pre": "conv1", "conv1_post": "act1", "conv1_pool": "pool1",
    "conv2_pre": "conv2", "conv2_post": "act2", "conv2_pool": "pool2",
    "fc1_pre": "fc1", "fc1_post": "act3", "logits": "fc2",
}


class DeepSkipMLP(nn.Module):
    """Figure 8's "pathologically deep" MLP: ``depth`` dense layers of ``width`` units with
    leaky ReLU, the flattened input concatenated to the input of layer ``skip_layer``
    (1-based; 0 or > depth: no skip), then Dense 10 (logits).

    Layer ``i`` is the module ``layer{i}`` (Linear then LeakyReLU), so a probe "after layer i"
    reads that module's output. ``init``: one of :data:`INITS` (biases zero). Keras' default,
    glorot_uniform (the notebook's), halves the signal's power at every layer (2^-64 by layer
    64), and SGD then barely moves the model; he_normal keeps the power through the layers.
    """

    def __init__(self, depth: int = 128, width: int = 128, skip_layer: int = 64,
                 in_features: int = 784, classes: int = 10, negative_slope: float = 0.01,
                 init: str = "he_normal"):
        super().__init__()
        self.skip_layer = skip_layer
        self.flatten = nn.Flatten()
        layers = []
        for i in range(1, depth + 1):
            fan_in = (in_features if i == 1 else width) + (in_features if i == skip_layer > 1 else 0)
            layers.append((f"layer{i}", nn.Sequential(OrderedDict([
                ("fc", nn.Linear(fan_in, width)), ("act", nn.LeakyReLU(negative_slope))]))))
        self.layers = nn.Sequential(OrderedDict(layers))
        self.logits = nn.Linear(width, classes)
        init_weights(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = r = self.flatten(x)
        for i, layer in enumerate(self.layers, start=1):
            if i == self.skip_layer and i > 1:
                x = torch.cat([x, r], dim=1)
            x = layer(x)
        return self.logits(x)


def deep_mlp_points(depth: int) -> dict[str, str]:
    """Figure 8's probe points: the input, then after every layer."""
    return {"input": "", **{f"layer{i}": f"layers.layer{i}" for i in range(1, depth + 1)}}
