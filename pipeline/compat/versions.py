"""Which library versions each fenced use of private internals was verified on, and the check.

Every module of :mod:`pipeline.compat` declares a :class:`Fence`: the distribution, the exact
versions its private-symbol use was read and tested against, and what happens on any other
version (``refuse``: start-up fails with a message; ``fallback``: the public path is used and a
warning logged). ``tests/compat`` checks that every private symbol still exists on the installed
versions, so a dependency bump fails there first, with the symbol's name.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import metadata
from typing import Literal

log = logging.getLogger(__name__)


class UnverifiedLibrary(RuntimeError):
    """A library version our private-symbol use was not verified on, where no public path exists."""


@dataclass(frozen=True)
class Fence:
    distribution: str  # as pip knows it
    verified: frozenset[str]  # exact versions read and tested
    on_other: Literal["refuse", "fallback"]
    uses: str  # what is used, in a few words (for the message)
    removable_when: str  # the upstream change that lets the fence go

    def installed(self) -> str | None:
        try:
            return metadata.version(self.distribution)
        except metadata.PackageNotFoundError:
            return None

    def ok(self) -> bool:
        """True on a verified version; else logs (fallback) or raises (refuse)."""
        version = self.installed()
        if version in self.verified:
            return True
        msg = (f"{self.distribution} {version} is not a version {sorted(self.verified)} that pipeline.compat was "
               f"verified on ({self.uses})")  # fmt: skip
        if self.on_other == "refuse":
            raise UnverifiedLibrary(msg + "; pin the verified version, or re-verify pipeline/compat and add it")
        log.warning("%s; using the public path instead", msg)
        return False
