"""genstudy: why do neural networks generalize? The library behind the DVC study."""
