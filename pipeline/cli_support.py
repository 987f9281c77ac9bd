"""Glue between argparse flags and the one settings model.

A flag declared with :func:`add_override` writes to a dotted settings path (``edge.detector``);
``pipeline.cli`` folds all such flags into nested overrides, which take priority over the
environment and the config file (see :mod:`pipeline.settings`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from pipeline.settings import Settings

Handler = Callable[[argparse.Namespace, Settings], int]
OVERRIDES_DEST = "_settings_overrides"


class _Override(argparse.Action):
    def __init__(self, option_strings: list[str], dest: str, path: str, **kw: Any) -> None:
        self.path = path
        super().__init__(option_strings, dest, **kw)

    def __call__(
        self, parser: argparse.ArgumentParser, ns: argparse.Namespace, values: Any, opt: str | None = None
    ) -> None:
        overrides = dict(getattr(ns, OVERRIDES_DEST, None) or {})
        overrides[self.path] = values if values is not None else self.const
        setattr(ns, OVERRIDES_DEST, overrides)


def add_override(parser: argparse.ArgumentParser, *flags: str, path: str, **kw: Any) -> None:
    """Add a flag that overrides the setting at dotted ``path``; help shows the env variable."""
    env = "PIPELINE_" + path.upper().replace(".", "__")
    kw["help"] = f"{kw.get('help', '')} [setting {path}, env {env}]".strip()
    parser.add_argument(*flags, action=_Override, path=path, dest=f"_ovr_{path}", default=None, **kw)


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in flat.items():
        node = out
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out
