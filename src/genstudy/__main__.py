"""``python -m genstudy <stage>``: see :mod:`genstudy.cli`."""

from .cli import main

main()
