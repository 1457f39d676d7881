"""The shared conformance suite: cases written once, run for every runtime pair.

``python -m sansquic_conformance`` prints the matrix (client runtime x server runtime x
case) and exits non-zero on any failure; ``tests/test_conformance.py`` runs
the same cases under pytest.
"""

from .cases import CASES, CROSS_CASES, FAST_CASES
from .harness import HARNESSES

__all__ = ["CASES", "CROSS_CASES", "FAST_CASES", "HARNESSES"]
