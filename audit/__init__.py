"""The auditor's surface: config versions, decision records, the archive, replay and the
tamper-evident chain over the ledger (issue 13)."""
