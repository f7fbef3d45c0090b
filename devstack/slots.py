"""Machine-wide numbered slots, so concurrent test sessions pick disjoint IPs and ports."""

from __future__ import annotations

import fcntl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO


@dataclass
class Slot:
    index: int
    previous_owner: str
    """What the last holder recorded (e.g. its state home), to clean up after a crashed one."""
    _file: IO[str]

    def record(self, owner: str) -> None:
        self._file.seek(0)
        self._file.truncate()
        self._file.write(owner)
        self._file.flush()

    def release(self) -> None:
        self._file.close()


def claim_slot(
    kind: str,
    usable: Callable[[Slot], bool] = lambda slot: True,
    limit: int = 10,
    lock_dir: Path | None = None,
) -> Slot:
    """Hold the lowest free slot of `kind` that is `usable`, until release() or exit.

    An flock dies with its process, so a killed test session never leaves a slot taken.
    `usable` may clean up after the previous owner, then check that nothing else (a server
    someone started by hand) holds the slot's addresses.
    """
    lock_dir = lock_dir or Path(tempfile.gettempdir()) / "replicante-slots"
    lock_dir.mkdir(parents=True, exist_ok=True)
    for index in range(limit):
        f = (lock_dir / f"{kind}-{index}.lock").open("a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            continue
        f.seek(0)
        slot = Slot(index, f.read().strip(), f)
        if usable(slot):
            return slot
        slot.release()
    raise RuntimeError(f"no usable {kind!r} slot among {limit} (locks in {lock_dir})")
