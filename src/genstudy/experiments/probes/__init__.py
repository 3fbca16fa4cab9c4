"""E7 probes: linear classifier probes (Alain & Bengio 2016, figures 5 and 8).

Figure 5: the convnet's ten probe points, probed at random init and after
training, over the configured seeds. Figure 8: the deep skip MLP, probed after
every layer at each snapshot step. All probes of one snapshot train at once
(genstudy.probes). Writes the probe tables (DVC plots), per-model results,
headline metrics, the two figures, training curves and the models.
"""
