"""Batch evaluation: score a model on datasets, every item exactly once (:mod:`.evaluator`), and the
``stqa evaluate`` command (:mod:`.command`). Never imports training (:mod:`stqa.engine`)."""
