"""E6 margins: DeepFool margins of MLPs 784-100-100-100-10 trained with SGD at lr x batch.

The 16 models (lr x batch, over the configured seeds) train as stacks, one per
batch size (genstudy.stacked.fit_stack), on a fixed training subset (the first
``train_size`` train images) toward 100% train accuracy; the accuracy reached is
recorded. DeepFool (genstudy.deepfool) then runs on the first ``deepfool.n_examples``
training images of every model, all examples as one batch. Writes one row per
model (margins, rho, share flipped, iterations, train/test accuracy), headline
metrics, per-epoch curves and the figures.
"""
