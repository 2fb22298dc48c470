"""Experiments over trained models: clip corruptions, robustness and ablation runs."""
