"""Deep-learning models: the only package that imports torch, always lazily inside functions."""
