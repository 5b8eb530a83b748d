"""Money is integer micro-dollars; these are the only conversions from exact Decimals."""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal

MICRO = Decimal(1_000_000)


def round_micro(value: Decimal) -> int:
    """Nearest micro-dollar, halves up: what a measured charge is recorded at."""
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def ceil_micro(value: Decimal) -> int:
    """Up to the next micro-dollar: estimates and holds guard a budget, so they never round
    down."""
    return int(value.quantize(Decimal(1), rounding=ROUND_CEILING))


def usd_to_micro(usd: Decimal | float | int) -> int:
    """A dollar amount (a price or a cap) in micro-dollars, truncated."""
    return int(Decimal(str(usd)) * MICRO)


def format_usd(micro: int, *, places: int = 6, grouped: bool = True) -> str:
    """Micro-dollars as a person reads them: `$1,234.567890`. The one money formatter.

    `places` 6 shows every micro-dollar (4 where a tile label has little room); `grouped`
    False leaves out the thousands separators, as the refusal and routing messages always
    have (their wording is matched by tests and people's scripts)."""
    grouping = "," if grouped else ""
    return f"${micro / 1_000_000:{grouping}.{places}f}"
