"""The files and folders a run's config names (``[data] path``, ``[cv] folds``): a relative one is
taken from the working directory, else from the config's folder, and one that is in neither is
refused before anything is written, naming the config file, the key and every absolute path tried."""
from __future__ import annotations

import os
from pathlib import Path

from dermstack.config import RunConfig
from dermstack.errors import ConfigError, did_you_mean, why_missing


def resolve_data_path(path: str, config_dir: Path | None) -> Path:
    """A relative ``[data] path`` is taken from the working directory, else from the config's folder."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists() or config_dir is None:
        return p.resolve() if p.exists() else p
    alt = config_dir / p
    return alt.resolve() if alt.exists() else p


def tried(path: str, config_dir: Path | None) -> list[str]:
    """The absolute paths :func:`resolve_data_path` looks at for ``path``, in its order."""
    p = Path(path).expanduser()
    dirs = [] if p.is_absolute() else [Path.cwd()] + ([config_dir] if config_dir is not None else [])
    out = [os.path.abspath(d / p) for d in dirs] or [str(p)]
    return list(dict.fromkeys(out))  # the config in the working directory: one folder, said once


def closest_sibling(paths: list[str]) -> str:
    """``' (did you mean "x"?)'`` for the first of ``paths`` whose folder holds a name close to its own, or ``''``."""
    for path in map(Path, paths):
        if path.parent.is_dir():
            names = [p.name for _, p in zip(range(10_000), path.parent.iterdir())]  # a huge folder is not listed whole
            if hint := did_you_mean(path.name, names):
                return hint
    return ""


def resolve_inputs(cfg: RunConfig, config_dir: Path | None, source: str = "config") -> None:
    """``cfg``'s ``[data] path`` and ``[cv] folds`` resolved in place; a ConfigError (``source``: the
    config file) for one that is not there or is not the kind of path it must be."""
    if cfg.data.format != "synthetic-isic2024" and not cfg.data.path:
        raise ConfigError(f"{source}: [data] path is required for format {cfg.data.format!r}")
    for section, key, file_only in ((cfg.data, "path", False), (cfg.cv, "folds", True)):
        given = getattr(section, key)
        if not given:
            continue
        found, name = resolve_data_path(given, config_dir), f"[{'data' if section is cfg.data else 'cv'}] {key}"
        if why := why_missing(found):
            where = tried(given, config_dir)
            rule = " (a relative path is taken from the working directory, else from the config file's folder)"
            raise ConfigError(f"{source}: {name} = {given!r}: {why}{closest_sibling(where)}; tried {', '.join(where)}"
                              f"{rule if len(where) > 1 else ''}")
        if file_only and not found.is_file():
            raise ConfigError(f"{source}: {name} = {given!r}: {found} is a folder, not a file")
        setattr(section, key, str(found))
