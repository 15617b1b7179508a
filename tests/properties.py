"""How many examples a property test draws: its own count in CI (derandomized, see conftest.py), and at least
the fuzz profile's 10,000 under ``make fuzz``."""

from __future__ import annotations

from hypothesis import settings

FUZZ_PROFILE = "fuzz"


def examples(count: int) -> int:
    """``count``, or the loaded profile's ``max_examples`` when fuzzing asks for more."""
    if settings.get_current_profile_name() == FUZZ_PROFILE:
        return max(count, settings.default.max_examples)
    return count
