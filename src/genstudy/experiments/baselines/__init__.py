"""Baselines: the cross-entropy models the experiments compare against.

E2's convnet and E3's MLP 784-300-100-10 (no regularization), trained on the
Fashion-MNIST train set over the configured seeds. Writes the models
(DVC-cached), per-seed and mean/std test metrics, and per-epoch curves.
"""
