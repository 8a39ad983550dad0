"""Test-wide settings: one torch thread, so numerics (and speed) do not depend on the core count."""
import torch

torch.set_num_threads(1)
