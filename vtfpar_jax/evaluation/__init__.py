"""Evaluation: the Evaluator, the three metric protocols, decision rules and pictures."""
