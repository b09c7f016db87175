"""``racro eval``: the captioner -> reasoner pipeline, benchmark files, scoring and the results table."""
