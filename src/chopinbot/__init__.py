"""ChopinBot: a small LSTM that composes piano music in the style of Chopin."""

__version__ = "0.1.0"
