"""Token layout, regions and the visual attention mask of PromptPAR's region-aware prompts.

With use_div, the visual sequence is [CLS, G0 (n prompts), P1, G1, P2, G2, ..., Pd, Gd, patches] where
n = vis_prompt / (div_num + 1): part token P_k sits at k * (n + 1), its prompt group right after it, and the
G x G patches follow a prefix of (div_num + 1) * (n + 1) tokens. Each region is a span of patch tokens.
Fixed geometry: region k covers patch rows [k*G/d - o/2, (k+1)*G/d + o/2) clipped to the grid, which gives the
reference's rows (0-4, 3-8, 7-12, 11-15) for G = 16, d = 4, o = 2. The reference's own geometry: spans start
at the hard-coded patch offsets 0/48/112/176 and run for its formula's row counts times G, clipped to the
grid; identical for G = 16, and for other grids (ViT-B/16 at 224: G = 14) what the reference code does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from parbench.api import ParbenchError


@dataclass(frozen=True)
class Layout:
    grid: int  # patches per side
    vis_prompt: int
    div_num: int  # 0 when use_div is off
    spans: tuple[tuple[int, int], ...]  # (first patch, last patch + 1) per region, row-major patch offsets

    @property
    def group(self) -> int:  # prompts per group
        return self.vis_prompt // (self.div_num + 1) if self.div_num else self.vis_prompt

    @property
    def prefix(self) -> int:
        return (self.div_num + 1) * (self.group + 1) if self.div_num else 1 + self.vis_prompt

    @property
    def length(self) -> int:
        return self.prefix + self.grid**2

    def part_index(self, k: int) -> int:
        """Sequence index of part token k (1-based)."""
        return k * (self.group + 1)

    def prompt_positions(self) -> list[int]:
        """Sequence index of each prompt row (row r of the layer's prompt tensor), in order."""
        if not self.div_num:
            return list(range(1, 1 + self.vis_prompt))
        n = self.group
        pos = list(range(1, 1 + n))
        for k in range(1, self.div_num + 1):
            start = self.part_index(k) + 1
            pos += list(range(start, start + n))
        return pos

    def source_order(self) -> list[int]:
        """Gather index that turns [CLS, P1..Pd, patches, prompts...] into the layout (used at layer 0)."""
        d, n_patch = self.div_num, self.grid**2
        prompt_src = 1 + d + n_patch  # prompts are appended after the tokens
        order = [0] + list(range(prompt_src, prompt_src + self.group))
        for k in range(1, d + 1):
            order.append(k)
            start = prompt_src + k * self.group
            order += list(range(start, start + self.group))
        order += list(range(1 + d, 1 + d + n_patch))
        return order

    @property
    def region_rows(self) -> tuple[tuple[int, int], ...]:
        """(first row, last row + 1) per region, where spans cover whole rows."""
        return tuple((a // self.grid, -(-b // self.grid)) for a, b in self.spans)

    def region_tokens(self, k: int) -> range:
        """Sequence indices of the patches of region k (1-based)."""
        a, b = self.spans[k - 1]
        return range(self.prefix + a, self.prefix + b)

    def mask(self) -> torch.Tensor:
        """Boolean (L, L), True = may attend. Rows of region block k see only their own part token and
        prompts and the patches of region k; CLS, global prompts and patches see everything."""
        m = torch.ones(self.length, self.length, dtype=torch.bool)
        for k in range(1, self.div_num + 1):
            rows = slice(self.part_index(k), self.part_index(k) + self.group + 1)
            m[rows] = False
            m[rows, rows] = True
            reg = self.region_tokens(k)
            m[rows, reg.start : reg.stop] = True
        return m


def regions(grid: int, div_num: int, overlap_row: int) -> tuple[tuple[int, int], ...]:
    half = overlap_row // 2
    rows = [(max(0, k * grid // div_num - half), min(grid, (k + 1) * grid // div_num + half)) for k in range(div_num)]
    return tuple((r0 * grid, r1 * grid) for r0, r1 in rows)


def reference_regions(grid: int, div_num: int, overlap_row: int) -> tuple[tuple[int, int], ...]:
    """The reference's geometry: row counts from its formula, starts from the hard-coded patch offsets
    0/48/112/176 (3, 7 and 11 rows of a 16-wide grid), clipped to the grid. Its literal prefix length (vis_prompt
    + 5) and those four offsets only hold for 4 regions with 2 overlap rows: anything else is refused."""
    if (div_num, overlap_row) != (4, 2):
        raise ParbenchError(
            "promptpar variant=reference",
            "div_num 4, overlap_row 2 (the reference hard-codes this geometry); use fix_geometry=true",
            f"div_num {div_num}, overlap_row {overlap_row}",
        )
    base = grid // div_num + overlap_row // 2
    rows = [base + overlap_row // 2 if r not in (0, div_num - 1) else base for r in range(div_num)]
    n = grid * grid
    return tuple((min(s, n), min(s + r * grid, n)) for s, r in zip((0, 48, 112, 176), rows, strict=True))


def make_layout(grid: int, vis_prompt: int, use_div: bool, div_num: int, overlap_row: int, fixed: bool) -> Layout:
    if not use_div:
        return Layout(grid, vis_prompt, 0, ())
    if vis_prompt % (div_num + 1):
        raise ParbenchError("promptpar", f"vis_prompt divisible by div_num + 1 = {div_num + 1}", str(vis_prompt))
    spans = regions(grid, div_num, overlap_row) if fixed else reference_regions(grid, div_num, overlap_row)
    return Layout(grid, vis_prompt, div_num, spans)
