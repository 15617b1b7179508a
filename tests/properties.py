"""How many examples a property test draws: its own count in CI (derandomized, see conftest.py), and at least
the fuzz profile's 10,000 under ``make fuzz``."""

from __future__ import annotations

from hypothesis import settings

FUZZ_PROFILE = "fuzz"
FUZZ_EXAMPLES = 10_000


def examples(count: int) -> int:
    """``count``, or the loaded profile's ``max_examples`` where that is a fuzzing run's (10,000 or more)."""
    loaded = settings.default.max_examples
    return max(count, loaded) if loaded >= FUZZ_EXAMPLES else count
