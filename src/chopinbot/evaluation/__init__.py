"""Judging models and pieces: baselines, music statistics and the evaluation report."""
