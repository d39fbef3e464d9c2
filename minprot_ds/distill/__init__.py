"""The distillation job: config (pure data), build, the engine's step, checkpoints, losses, export,
the watchdog, step metrics and the FLOP model; plus the teacher pre-training and demo that feed it."""
