"""Compression techniques, one module each."""
