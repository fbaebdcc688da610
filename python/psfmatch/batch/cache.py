# SPDX-License-Identifier: BSD-3-Clause
"""The template analyses of one worker process, shared by the pairs it runs."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any


class _TemplateCache:
    """The template analyses of one worker process, least recently used dropped first.

    Threads of one worker asking for the same template at once wait for the first one's
    analysis instead of repeating it.
    """

    def __init__(self, maxEntries: int = 8) -> None:
        self.maxEntries = maxEntries
        self._entries: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._computing: dict[tuple[Any, ...], threading.Lock] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def _lookup(self, key: tuple[Any, ...]) -> Any:
        analysis = self._entries.get(key)
        if analysis is not None:
            self._entries.move_to_end(key)
            self.hits += 1
        return analysis

    def get(self, key: tuple[Any, ...], compute: Callable[[], tuple[Any, Any]]) -> tuple[Any, Any]:
        """``(analysis, None)`` from the cache, else ``compute()``'s ``(analysis, extra)``."""
        with self._lock:
            analysis = self._lookup(key)
            if analysis is not None:
                return analysis, None
            keyLock = self._computing.setdefault(key, threading.Lock())
        with keyLock:
            with self._lock:
                analysis = self._lookup(key)
            if analysis is not None:
                return analysis, None
            try:
                analysis, extra = compute()
                with self._lock:
                    self.misses += 1
                    self._entries[key] = analysis
                    while len(self._entries) > self.maxEntries:
                        self._entries.popitem(last=False)
            finally:
                with self._lock:
                    self._computing.pop(key, None)
        return analysis, extra

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0


_TEMPLATE_CACHE = _TemplateCache()


def _template(path: str, config: Any) -> tuple[Any, Any, bool]:
    """(template for `subtract`, its analysis, whether the analysis came from the cache)."""
    from ..image_psf_match import ImagePsfMatchTask
    from ..io import readImage

    task = ImagePsfMatchTask(config=config)
    try:
        st = os.stat(path)
    except OSError:
        return path, None, False  # let subtract report the missing file as it always does
    key = (
        os.path.realpath(path),
        st.st_dev,
        st.st_ino,
        st.st_size,
        st.st_mtime_ns,
        task.templateSettings(),
    )

    def compute() -> tuple[Any, Any]:
        image = readImage(path)
        return task.analyzeTemplate(image), image

    analysis, image = _TEMPLATE_CACHE.get(key, compute)
    if image is None:
        return path, analysis, True
    return image, analysis, False
