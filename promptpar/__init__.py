"""PromptPAR (Wang et al., arXiv 2312.10692) on open_clip: faithful `reference` variant and a `fixed` one."""

from promptpar.config import PromptParConfig

__all__ = ["PromptParConfig"]
