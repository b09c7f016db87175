"""What a run shows its user: the reward table and curves, the caption viewer."""
