"""The one protein forward under fine-tune and inference: windows over long proteins, the windowed
forward, encoder loading, and the task model with its head."""
