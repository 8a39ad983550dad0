"""Command-line stages: one module per pipeline stage, each with ``main(argv=None) -> int``."""
