"""Deployment checks: run each artifact in its own runtime (validate) and time it (bench)."""
