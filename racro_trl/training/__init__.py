"""CRO training: the trainer and its TRL seams, the caption reward, the recipe's arguments, launch checks."""
