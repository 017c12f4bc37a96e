"""Content hashes of the files a result depends on (weights, annotations, split files).

Caches and run identities key on what a file *holds*, not on its path: overwriting a weight file or fixing an
annotation in place gives new keys. Hashing a 1.7 GB ViT-L/14 file takes seconds, so each digest is memoised on
disk by (absolute path, size, mtime, inode): the same untouched file is hashed once per machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

_MEMO: dict[tuple, str] = {}


def _stat_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)


def file_sha256(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes, memoised in memory and in the cache folder."""
    from parbench.atomic import write_text
    from parbench.settings import cache_dir

    path = Path(path)
    key = _stat_key(path)
    if key in _MEMO:
        return _MEMO[key]
    memo = cache_dir() / "digests" / f"{hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32]}.txt"
    digest = ""
    if memo.is_file():
        digest = memo.read_text().strip()
    if len(digest) != 64:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        digest = h.hexdigest()
        with contextlib.suppress(OSError):  # a read-only cache only costs the next run another hash
            write_text(memo, digest)
    _MEMO[key] = digest
    return digest


def files_sha256(paths: list[str | Path]) -> str:
    """One digest over several files (in order); a missing file contributes its absence."""
    h = hashlib.sha256()
    for p in paths:
        p = Path(p)
        h.update(f"{p.name}:{file_sha256(p) if p.is_file() else '-'};".encode())
    return h.hexdigest()


def tensors_sha256(state: dict) -> str:
    """Digest of named tensors' values (dtype, shape and bytes, in key order): verifies that a rebuilt model's
    frozen weights are the ones a run trained with."""
    import torch

    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k]
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
