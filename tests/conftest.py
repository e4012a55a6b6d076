"""Suite-wide set-up.

The suite's gateways, proxies and CLI runs share ledgers the way a deployment's replicas do (two
proxies on one PostgreSQL ledger, a proxy and `governor audit` on one SQLite file), so they share
one fingerprint salt, as the deploy docs require of replicas (`ledger.salt_check` refuses another
salt at start). Tests of the salt itself (per data dir files, the mismatch refusal) unset or set
GOVERNOR_FINGERPRINT_SALT on their own.
"""

from __future__ import annotations

import os
import uuid

os.environ.setdefault("GOVERNOR_FINGERPRINT_SALT", "governor-tests-" + uuid.uuid4().hex)
