"""Training engine: the loop, evaluation, checkpoints, optimisers and schedules, run-time setup."""
