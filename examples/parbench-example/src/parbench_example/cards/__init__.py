"""Dataset cards this package provides (entry-point group `parbench.cards`): every *.toml in this folder."""
