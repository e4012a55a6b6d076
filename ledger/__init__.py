"""Governor's ledger: one row per governed call, written exactly once, never on the hot path."""

from ledger.errors import LedgerError, LedgerUnavailable
from ledger.journal import Journal
from ledger.redaction import content_fields, hash_text
from ledger.store import CallAggregate, LedgerStore
from ledger.writer import LedgerWriter

__all__ = [
    "CallAggregate",
    "Journal",
    "LedgerError",
    "LedgerStore",
    "LedgerUnavailable",
    "LedgerWriter",
    "content_fields",
    "hash_text",
]
