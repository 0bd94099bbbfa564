"""Figures of this run (boot and stop times per case), printed by conftest.py at the end."""

BOOT_FIGURES: list[dict] = []
