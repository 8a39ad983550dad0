"""moebench: one library and one protocol for Mixture-of-Experts reproductions."""
__version__ = "0.1.0"
