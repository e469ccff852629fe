"""emergence: train a family of GPT sizes, probe every checkpoint on held-out tasks, fit scaling laws and flag
emergent abilities with their evidence."""
__version__ = "0.1.0"
