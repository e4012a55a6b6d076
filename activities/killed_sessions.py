"""The sessions this runtime refuses (killed, or closed by their owner), bounded by count.

Session id -> the kill's reason (or the close marker), at most `cap` of them: the least recently
marked or looked-up entry goes first. An entry dropped here is not lost: the ledger keeps every
kill and close (`kills`), and once anything was dropped, a session this runtime does not know
(the owner check's ledger round trip, once per session per replica) is looked up there too
(`Gateway.check_session`), so a killed session stays refused however many kills there were.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator

DEFAULT_CAP = 100_000


class KilledSessions:
    __slots__ = ("_m", "cap", "forgotten", "on_forget", "version")

    def __init__(self, cap: int = DEFAULT_CAP) -> None:
        self._m: OrderedDict[str, str] = OrderedDict()
        self.cap = cap
        self.forgotten = 0  # entries dropped for the bound (0: every kill is known here)
        self.version = 0  # grows on every change (the last-known-state saver reads it)
        self.on_forget: Callable[[str], object] | None = None

    def get(self, session_id: str, default: str | None = None) -> str | None:
        return self._m.get(session_id, default)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._m

    def __len__(self) -> int:
        return len(self._m)

    def __iter__(self) -> Iterator[str]:
        return iter(self._m)

    def __getitem__(self, session_id: str) -> str:
        return self._m[session_id]

    def keys(self) -> Iterator[str]:
        return iter(self._m)

    def items(self) -> list[tuple[str, str]]:
        return list(self._m.items())

    def __setitem__(self, session_id: str, reason: str) -> None:
        m = self._m
        m[session_id] = reason
        m.move_to_end(session_id)
        self.version += 1
        while len(m) > self.cap:
            old, _ = m.popitem(last=False)
            self.forgotten += 1
            if self.on_forget is not None:
                self.on_forget(old)

    def setdefault(self, session_id: str, reason: str) -> str:
        had = self._m.get(session_id)
        if had is not None:
            return had
        self[session_id] = reason
        return reason
