"""The ledger's exceptions: few, so callers can map them to one HTTP answer each."""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every error the ledger raises on purpose."""


class LedgerUnavailable(LedgerError):
    """The ledger database cannot be reached or written right now: answer 503, retry later.

    Wraps driver, pool and OS errors so callers never see (or leak) a SQLAlchemy traceback.
    """


class LedgerRefused(LedgerError):
    """The database refused this operation's data (a value it cannot store, a constraint it
    breaks): the same rows would be refused again, so retrying cannot help. Any other
    `LedgerError` may be the database's state (full, read-only, a lock, a permission) and a
    writer keeps the rows for a later try."""
