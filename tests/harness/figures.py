"""Figures of this run (boot and stop times per case): filled by the e2e cells and the
test guests (a guest writes its own out for its host's table), printed at the end of any
session that has some (tests/conftest.py), so that ``make test-guests`` shows them too."""

BOOT_FIGURES: list[dict] = []


def summary_lines() -> list[str]:
    """The table, then the enabled units that passed without being active, and why
    (checks.unit_verdict)."""
    if not BOOT_FIGURES:
        return []
    lines = [f"{'case':58} {'boot 1':>8} {'stop':>6} {'boot 2':>8} {'stop':>6}"]
    for f in BOOT_FIGURES:
        cells = [f"{f[k]:.2f}s" if isinstance(f.get(k), float) else "-" for k in ("boot1", "stop1", "boot2", "stop2")]
        lines.append(f"{f['case']:58} {cells[0]:>8} {cells[1]:>6} {cells[2]:>8} {cells[3]:>6}")
    accepted = [(f["case"], unit, why) for f in BOOT_FIGURES for unit, why in sorted((f.get("accepted") or {}).items())]
    if accepted:
        lines.append("enabled units accepted while inactive:")
        lines += [f"  {case}: {unit}: {why}" for case, unit, why in accepted]
    return lines
