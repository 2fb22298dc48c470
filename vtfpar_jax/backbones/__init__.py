"""The frozen backbones outside their Flax towers: weight files (HF, OpenAI), tokenizers,
and the attribute text features computed once per run."""
