"""Write-behind: the restored filesystem is written back while a receive is still arriving.

Rule: a drill's receive lands in the page cache (far below the kernel's own writeback
threshold on a machine with memory), and the writable snapshot taken right after it
commits, so the whole stream would be written back only then, after the receive, on
the drill's critical path. While a receive runs on a scratch image, a thread syncs
that filesystem over and over (syncfs: write back, commit; with the scratch mount's
nobarrier no fsync of the image file), so the write-back overlaps the receive and the
snapshot finds little left to write. Nothing is verified differently: this only moves
when the data reaches the image.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import TracebackType

from subvault.btrfs import adapter
from subvault.errors import SubvaultError

PAUSE = 0.1  # seconds between the end of one syncfs and the start of the next


class WriteBehind:
    """Context manager: sync the filesystem holding `path` repeatedly until exit."""

    def __init__(self, path: str | Path) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="write-behind", daemon=True)

    def __enter__(self) -> WriteBehind:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()  # at most the syncfs in progress: write-back the snapshot would do anyway
        os.close(self._fd)

    def _loop(self) -> None:
        while not self._stop.wait(PAUSE):
            try:
                adapter.syncfs(self._fd)
            except SubvaultError:
                return  # only an optimisation: the snapshot's own commit still writes everything
