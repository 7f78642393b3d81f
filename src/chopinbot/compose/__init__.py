"""Composing: seeds, the step-by-step engines and the generation loop."""
