"""Per-session run control and trace files: the Stop flags and the JSON files offered for download."""

from __future__ import annotations

import logging
import re
import tempfile
import threading
import time
from pathlib import Path

from mambaviz.trace import Trace

logger = logging.getLogger(__name__)


class StopFlags:
    """Stop flags per browser session, set by the Stop button and checked by runs between steps.

    Gradio cannot pass a running event a new value, so the flags live here, keyed by the session
    hash that Gradio gives every event of one page. A session can run a generation and a comparison
    at once, and Stop ends both.
    """

    def __init__(self) -> None:
        self._flags: dict[str, set[threading.Event]] = {}
        self._lock = threading.Lock()

    def start(self, session: str) -> threading.Event:
        """Return a fresh, unset flag for a run of `session` that begins now."""
        flag = threading.Event()
        with self._lock:
            self._flags.setdefault(session, set()).add(flag)
        return flag

    def stop(self, session: str) -> bool:
        """Set the session's flags; return whether a run was there to stop."""
        with self._lock:
            flags = list(self._flags.get(session, ()))
        for flag in flags:
            flag.set()
        return bool(flags)

    def finish(self, session: str, flag: threading.Event) -> None:
        with self._lock:
            flags = self._flags.get(session)
            if flags is not None:
                flags.discard(flag)
                if not flags:
                    del self._flags[session]


class TraceFiles:
    """Writes traces as JSON files for download into one temporary folder, deleting files older than `max_age`.

    Gradio copies a returned file into its own cache before serving it, so deleting the original
    after an hour does not break a download link the page already shows.
    """

    def __init__(self, max_age_seconds: float = 3600.0) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="mambaviz-traces-"))
        self.max_age_seconds = max_age_seconds
        self._lock = threading.Lock()
        self._counter = 0

    def write(self, trace: Trace, label: str) -> str:
        """Save `trace` as `mambaviz-<label>-<time>-<n>.json` and return its path."""
        self._remove_old()
        with self._lock:
            self._counter += 1
            counter = self._counter
        safe_label = re.sub(r"[^A-Za-z0-9_-]+", "-", label).strip("-") or "run"
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = self.folder / f"mambaviz-{safe_label}-{stamp}-{counter}.json"
        trace.save(path)
        return str(path)

    def _remove_old(self) -> None:
        limit = time.time() - self.max_age_seconds
        for path in self.folder.glob("*.json"):
            try:
                if path.stat().st_mtime < limit:
                    path.unlink()
            except FileNotFoundError:
                continue  # another session removed it first
