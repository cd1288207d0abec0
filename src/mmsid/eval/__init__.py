"""Evaluation: codebook metrics (and, with the downstream issues, ranking/retrieval metrics)."""
