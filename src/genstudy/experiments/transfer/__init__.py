"""E4 transfer: reuse model A's lower layers for task B, against training B from scratch.

Task A: the 8 classes other than ``b_classes`` (labels re-indexed 0..7);
task B: ``b_classes[0]`` (label 0) vs ``b_classes[1]`` (label 1), on only
``b_train_size`` training images. As in the notebook, both tasks' training
images come from the 75 % part of a fixed 75/25 split of the train set
(``split_seed``); the 25 % part gives the validation curves; test sets are the
test set filtered the same way.

Per seed s, three models are trained:
- model A (MLP 784-200-150-100-50-8) on task A: init and batch order from s;
- model B from scratch (MLP 784-300-150-100-80-1) on the B subset: init and order from s;
- the transferred model: a *copy* of model A (seed s) up to ``reuse_upto``, a new head
  (init from s), ``frozen_epochs`` with the copied layers frozen, then
  ``unfrozen_epochs`` with everything trainable (batch order from s).
Which ``b_train_size`` images form the B subset: ``b_subset: random`` draws them with a
generator seeded with s (each seed its own subset: the notebook's "first 100" were
taken after train_test_split's shuffle, so they were a random draw too);
``b_subset: first`` takes the first ones of the split's (fixed) order for every seed,
so that only initialisation and batch order vary.
"""
