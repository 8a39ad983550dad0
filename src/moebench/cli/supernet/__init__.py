"""Command lines of the supernet study (one module per stage)."""
