"""parbench: a benchmark and zero-shot evaluation suite for pedestrian attribute recognition.

Importing this package stays cheap (no torch, no open_clip) so that `parbench --help`, `datasets list` and
`score` start instantly; heavy modules are imported where they are used.
"""

__version__ = "0.1.0"
