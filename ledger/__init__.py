"""Governor's ledger: one row per governed call, written exactly once, never on the hot path.

Import the modules themselves (`ledger.store`, `ledger.writer`, …): this package stays light so
the SQLite writer process (`ledger.sqlite_fast`) starts without the database stack.
"""
