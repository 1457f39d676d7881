"""qlog traces as files: pass a :class:`QlogDirectory` as ``Config.qlog``.

>>> import sansquic, tempfile
>>> config = sansquic.Config(dev_mode=True, qlog=QlogDirectory(tempfile.mkdtemp()))

Each connection's trace is written when it ends, as
``<original destination connection id>-<client|server>.qlog`` (qlog 0.3 JSON),
which qvis (https://qvis.quictools.info) opens. This module is the only one of
the core that writes files; the connection only calls the callable it is given.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["QlogDirectory"]

_MAX_SAME_NAME = 1000  # suffixes tried when a file name is taken (a reused id)


class QlogDirectory:
    """A ``Config.qlog`` callable that writes each trace as a ``.qlog`` file in ``path``.

    The directory is made if missing. A name that is taken gets a ``-1``,
    ``-2``, ... suffix, so no trace overwrites another.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path: Path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"QlogDirectory({str(self.path)!r})"

    def __call__(self, trace: dict[str, Any]) -> Path:
        """Write ``trace`` and return the file's path."""
        first = trace["traces"][0]
        stem = f"{first['common_fields']['ODCID']}-{first['vantage_point']['type']}"
        for attempt in range(_MAX_SAME_NAME):
            target = self.path / (stem + (f"-{attempt}" if attempt else "") + ".qlog")
            try:
                with target.open("x", encoding="utf-8") as f:
                    json.dump(trace, f)
            except FileExistsError:
                continue
            return target
        raise FileExistsError(f"{_MAX_SAME_NAME} traces named {stem} in {self.path} already")
