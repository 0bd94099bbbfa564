"""oci-systemd-copyup: the prestart/createRuntime hook that copies image content into
the container's new tmpfs mounts (/run, /tmp, ...). See docs/copyup.md.

Import closure: the standard library, transformer/__init__.py, transformer/errors.py,
transformer/fsguard.py (what it shares with the transformer) and this package. It
runs on every container start; keep it that way (a test checks).
"""
