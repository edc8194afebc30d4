"""Helpers shared by training, evaluation and serving (no model or data knowledge)."""
