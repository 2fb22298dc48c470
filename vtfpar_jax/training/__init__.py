"""Training: the trainer and its loop, the step, losses and run logs."""
