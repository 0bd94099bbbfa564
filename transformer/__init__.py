"""oci-systemd: make an OCI bundle ready to run systemd as PID 1.

Kept import-free on purpose: the copy-up helper (transformer.copyup) runs on every
container start and must not pay for click, jsonpatch or deepdiff.
"""

__version__ = "0.1.0"
