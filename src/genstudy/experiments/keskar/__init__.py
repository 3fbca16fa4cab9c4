"""E1b Keskar's F1: are large-batch minima sharper than small-batch ones at the paper's scale?

Trains Keskar et al.'s (ICLR 2017) network F1 (784 - 5 x [512, batch norm, ReLU] - 10,
softmax cross-entropy, Adam) with a small batch (SB, 256) and a large batch (LB, a fraction
of the training set, 10 % in the paper), once per seed, each until its training set is
fitted to the same criterion (eval-mode training accuracy) or an epoch cap. Each model
is then measured: train/test loss and accuracy, the generalization gap, and Keskar's
sharpness (Metric 2.1, full space) at every eps, maximised by L-BFGS-B as in the paper
and, as a cross-check, by projected sign-gradient ascent.
"""
