"""The columns of a training set as this project writes it (``racro make-sample-data``)."""

from __future__ import annotations


def training_features(**extra):
    """The ``datasets.Features`` of a written training set: images (embedded), question, answer,
    category, source, qid, plus ``extra`` columns (name -> feature)."""
    import datasets

    text = datasets.Value("string")
    columns = {"images": datasets.List(datasets.Image()), "question": text, "answer": text, "category": text}
    return datasets.Features({**columns, "source": text, "qid": text, **extra})
