"""Figures of this run (boot and stop times per case), printed at the end by the e2e
suite's conftest.py, and written out by a test guest for its host's table."""

BOOT_FIGURES: list[dict] = []
