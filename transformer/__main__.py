"""`python -m transformer` is `oci-systemd`."""

from .cli import entry

entry()
