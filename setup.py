"""The optional C checks of the guardrails (policies/guardrails/_checks_c.c).

Everything else is in pyproject.toml. `optional=True`: where the extension cannot be built (no
compiler), the install goes on and policies/guardrails/checks.py uses its Python versions, which
give the same answers. `pip install -e .` builds it next to its source.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "policies.guardrails._checks_c",
            ["policies/guardrails/_checks_c.c"],
            optional=True,
        )
    ]
)
