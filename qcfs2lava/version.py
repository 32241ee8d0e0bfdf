"""The package version (one place; the checkpoint and NetX metadata record it)."""
__version__ = "0.1.0"
