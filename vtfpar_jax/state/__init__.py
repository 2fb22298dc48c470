"""A model's state: building it from a config, the trainable/frozen split, the optimiser
whose state a checkpoint holds, checkpoints, sharding, run identity, and model dirs."""
