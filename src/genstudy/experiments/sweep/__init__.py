"""E5 sweep: learning rate x batch size, MLP 784-512-10, SGD with momentum.

Three sweeps over the configured seeds on a fixed training subset (the first
``train_size`` train images), evaluated on the test set: lr at a fixed batch,
batch at a fixed lr, and the full lr x batch grid. Every model trains in a
stack (genstudy.stacked.fit_stack); runs shared by two sweeps train once and each
sweep reads its own number of epochs (genstudy.lr_batch). Writes the tidy table
(one row per sweep x run), headline metrics, per-epoch curves and the figures.
"""
