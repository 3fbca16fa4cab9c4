"""E2 gradient loss: the convnet trained on the gradient loss vs the cross-entropy baseline.

The gradient arm trains E2's convnet on ``objectives.gradient_loss`` over the
configured seeds; the baseline arm is the baselines stage's convnet of the
same seed, read from ``models/baselines`` (it must have been trained on the
same train subset). Both arms are scored on the test set under additive
Gaussian noise for each sigma, from one noise draw shared by every model.
"""
