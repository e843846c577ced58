"""Shared chunk-pipeline stages reused across op families."""
