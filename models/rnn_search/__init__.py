"""Random weight guessing of a small tanh RNN (no gradients)."""
