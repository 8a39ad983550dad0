"""The supernet study: HAT / Mixture-of-Supernets weight-sharing MT supernets and their
hardware-aware search."""
