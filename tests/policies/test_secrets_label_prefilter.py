"""The labelled-assignment regexes that refuse, in C, labels and values the Python checks would
refuse find exactly what the plain label regexes found (every candidate examined in Python), on
texts of labelled values one after another."""

from __future__ import annotations

import random
import re
import string

import pytest

from policies.guardrails import secrets
from policies.guardrails.spans import lowered

# The label regexes before: any run-on, any operator, any value went to the Python checks.
_OLD_OP = (
    r"[a-z0-9_]{0,32}+[\"'\]]?(?:[ \t]++string)?[ \t]*+"
    r"(?:(?:[=!]==?+|=>|:{0,3}=|\?=|\.=|\+=|:|(?<=[\"']),)[ \t]*+|>[ \t\r\n]{0,64}+)"
)
_OLD = tuple(
    re.compile(stem + _OLD_OP)
    for stem in (r"pass(?:word|wd)", "pwd", "secret", "token", "cred", "key")
)
# A random identifier longer than the 256 characters a value is cut at, then `:`.
_ALNUM = string.ascii_letters + string.digits
_LONG_NAME = "k" + "".join(random.Random(0).choices(_ALNUM, k=259))
_LABELS = ("password", "passwd", "pwd", "secret", "token", "cred", "creds", "credential",
           "credentials", "credentialss", "key", "api_key", "apikey", "api__key", "api-key",
           "access.key", "ACCESS_KEY", "secretKey", "mySecretString", "token_id", "tokenizer",
           "tokens", "secret_key_2", "client_secret", "public_key", "key_length", "credentialsId",
           "github_token", "DB_PASSWORD", "privatekey", "xsrf_token", "auth_tokenx", "keytoken",
           "monkey", "password_hash", "secretstr", "tokenvalue", "token_" + "x" * 40)  # fmt: skip
_OPS = ("=", ": ", ":=", " = ", "=>", '": "', "' => '", " == ", '", "', ">\n  ", "::=", "?=", ".=",
        "+=", " string = ", "]=", ":", ":\t", " != ", "===")  # fmt: skip
_VALUES = ("Hunter2024", "Xq7rT2mZ9wLp", "abc", "changeme", "os.environ['X']", "settings.api_key",
           '"kQ9#vX2!pL"', "'s3cr3tV4lue!'", "${DB}", "token", "key=Zx81Kq93Lm", "aB3$dE6^",
           "1234567", "=1234567", "Zx81Kq93Lm.", "<your-key>", "get_token()", "b'Zx81Kq93Lm'",
           "`aB3$dE6^x`", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY", "Zx81Kq9",
           "cfg.db.pass:word9X", "$ref:Zx81Kq93", "Zx81_Kq93:", "a.b[0]x9",
           "Kq9x" * 63 + ":x9", "Kq9x" * 61 + ":x9", "Zx8.1Kq93Lm:", "r:Zx81Kq93Lm",
           _LONG_NAME + ":x9", _LONG_NAME[:240] + ":x9")  # fmt: skip


def _old_assignments(text: str) -> list[secrets.Span]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(secrets, "_ASSIGN", _OLD)
        return list(secrets._assignments(text, lowered(text)))


@pytest.mark.parametrize("seed", [1, 2])
def test_label_prefilters_find_what_the_python_checks_found(seed: int) -> None:
    rnd = random.Random(seed)
    found = 0
    for _ in range(8_000):
        parts = [rnd.choice(_LABELS) + rnd.choice(_OPS) + rnd.choice(_VALUES)
                 for _ in range(rnd.randint(1, 6))]  # fmt: skip
        text = "".join(p + rnd.choice((" ", "\n", "\n\n", "; ", ",\n")) for p in parts)
        got = list(secrets._assignments(text, lowered(text)))
        assert got == _old_assignments(text), text
        found += len(got)
    assert found > 5_000  # the generator does produce findings
