"""Leaf utilities (no torch, nothing else of ours): errors, safe file writing, tables, plot style, progress, per-sample outputs."""
