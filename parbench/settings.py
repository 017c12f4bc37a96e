"""Where parbench keeps things, and where each dataset lives on this machine.

This is the one place (with cli.py) that reads the environment: PARBENCH_CACHE (cache folder, default
~/.cache/parbench), PARBENCH_CONFIG (user config file, default ~/.config/parbench/config.toml) and
PARBENCH_ROOT_<NAME> (a dataset's root, e.g. PARBENCH_ROOT_PETA_ZS). The config file may hold

    [roots]
    PETA = "/data/PETA"
    PA100k = "/data/PA100k"

    [cards]
    dirs = ["/data/cards"]      # folders of dataset cards (TOML), searched after the shipped ones

PARBENCH_CARDS (folders separated by the OS's path separator, ':' on Linux) is searched before [cards] dirs.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

from parbench.errors import ParbenchError


def cache_dir() -> Path:
    """parbench's cache folder (PARBENCH_CACHE, default ~/.cache/parbench): keep method caches under it."""
    return Path(os.environ.get("PARBENCH_CACHE", Path.home() / ".cache" / "parbench"))


def config_path() -> Path:
    return Path(os.environ.get("PARBENCH_CONFIG", Path.home() / ".config" / "parbench" / "config.toml"))


def env_var(dataset: str) -> str:
    return "PARBENCH_ROOT_" + re.sub(r"[^A-Za-z0-9]", "_", dataset).upper()


def _config() -> dict:
    path = config_path()
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ParbenchError(path, "a valid TOML config", str(e)) from None


def wandb_mode() -> str:
    """W&B logs offline unless the user configured it: WANDB_MODE set, or an API key in the environment or in
    ~/.netrc (what `wandb login` writes)."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    netrc = Path.home() / ".netrc"
    configured = bool(os.environ.get("WANDB_API_KEY")) or (netrc.is_file() and "api.wandb.ai" in netrc.read_text())
    return "online" if configured else "offline"


def card_dirs() -> tuple[Path, ...]:
    """User folders of dataset cards: PARBENCH_CARDS, then the config's [cards] dirs."""
    dirs = [Path(d).expanduser() for d in os.environ.get("PARBENCH_CARDS", "").split(os.pathsep) if d]
    cards = _config().get("cards", {})
    listed = cards.get("dirs", []) if isinstance(cards, dict) else None
    if not isinstance(listed, list) or not all(isinstance(d, str) for d in listed):
        raise ParbenchError(config_path(), '[cards] dirs = ["folder", ...] (a list of strings)', repr(cards))
    return tuple(dirs + [Path(d).expanduser() for d in listed])


def configured_root(dataset: str) -> Path | None:
    """The root set once for a dataset: environment first, then the user config file."""
    if env := os.environ.get(env_var(dataset)):
        return Path(env)
    path = config_path()
    if path.is_file():
        roots = _config().get("roots", {})
        if not isinstance(roots, dict):
            raise ParbenchError(path, 'a [roots] table of dataset = "folder"', f"roots = {roots!r}")
        for key, value in roots.items():
            if key.lower() == dataset.lower():
                if not isinstance(value, str) or not value:
                    raise ParbenchError(path, f"[roots] {key} as a folder path (a string)", repr(value))
                return Path(value).expanduser()
    return None
