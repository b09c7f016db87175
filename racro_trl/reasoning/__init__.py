"""The text reasoner and its grading: backends, prompts, answer extraction and grading, the judge."""
