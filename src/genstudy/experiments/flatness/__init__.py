"""E1 flatness: does the batch size change flatness, input sensitivity and the gap?

Trains the MLP 784-16-16-10 (Adam) for every batch size and seed on the first
``train_size`` train / ``test_size`` test images, then measures each model:
train/test loss and accuracy, the generalization gap, the input sensitivity
(per-example norm of d loss / d input over the test subset, distribution kept)
and Keskar's epsilon-sharpness on the training subset.
"""
