"""The data path: prepared Arrow shards, the exact-resume stream over them, batching and masking."""
