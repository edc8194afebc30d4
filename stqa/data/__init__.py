"""TGIF-QA annotations, the synthetic benchmark, feature stores and datasets."""
