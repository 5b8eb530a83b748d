"""Sum a chaos run's log (one JSON line per seed, written by tests/e2e/test_chaos.py when
CHAOS_LOG is set): `make chaos` runs its seeds over two pytest workers, whose printed
totals xdist does not show, and prints this summary instead."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path


def summarise(path: Path) -> str:
    seeds: list[int] = []
    kinds: Counter[str] = Counter()
    broken: list[str] = []
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        seeds.append(int(entry["seed"]))
        kinds.update({str(k): int(v) for k, v in entry["by_kind"].items()})
        broken.extend(f"seed {entry['seed']}: {b}" for b in entry["breaks"])
    faults = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
    lines = [
        f"chaos: {len(seeds)} seeds logged ({min(seeds, default=0)}..{max(seeds, default=0)}),"
        f" {sum(kinds.values())} faults injected: {faults}",
        f"invariant breaks: {len(broken)}",
        *broken,
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(summarise(Path(sys.argv[1])) + "\n")
