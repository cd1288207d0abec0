"""Generative retrieval (TIGER over semantic IDs, trie-constrained beam search) and the
SASRec item-id baseline."""
