"""Readers turn original annotation files into a `PARDataset`; they never decode images."""

from parbench.data.readers.mat import read_pa100k, read_peta, read_rapv1, read_rapv2
from parbench.data.readers.wider import read_wider
from parbench.data.synthetic import read_synthetic

__all__ = ["read_pa100k", "read_peta", "read_rapv1", "read_rapv2", "read_synthetic", "read_wider"]
