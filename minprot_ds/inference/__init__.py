"""Whole-proteome inference: `minprot predict` (a fine-tuned model's classes) and `minprot embed` (an
encoder's hidden states), streamed, batched by a token budget, windowed, resumable and multi-rank."""
