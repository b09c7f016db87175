"""Mini-RACRO: the paper's two claims reproduced in miniature, on synthetic tiles and models built here
(:mod:`.task` the data, :mod:`.models` the captioner and reasoners, :mod:`.repro` the one command)."""
