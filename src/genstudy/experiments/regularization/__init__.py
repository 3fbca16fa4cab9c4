"""E3 regularization: the MLP 784-300-100-10 with and without each regularizer.

Data: the 75/25 train/validation split of the train set (``split_seed``),
standardised per pixel with the train split's statistics; the test set the
same way. Every variant listed in ``variants`` is trained for each seed with
its validation curve logged; an MC-dropout variant trains nothing: it
evaluates the trained model of the variant it names (``mc_dropout_of``) with
dropout active, averaging the class probabilities over ``mc_passes`` passes.
Variants with one architecture (activation and dropout) train together, every
seed and strength, as stacks (``stacked.fit_stack_autograd``): each model's
run is the one ``training.fit`` gives it alone, to float rounding (a test).

Columns of results.csv, per variant and seed: ``test_acc``, ``best_val_acc``
(and its epoch), ``final_val_acc``, ``train_acc`` (eval mode, after the last
epoch) and ``gap`` = train_acc - final_val_acc. For an MC variant the curve
columns are those of the model it reuses and ``train_acc``/``gap`` are left
empty (MC inference over the whole train split is not run).
"""
