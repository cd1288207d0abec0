"""CTR ranking: samples, DIN (item ids, optionally + SID embeddings), MCCA."""
