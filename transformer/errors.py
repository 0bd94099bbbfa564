"""The one exception root. Every error a user can cause is an OciSystemdError.

Each carries the file and the JSON pointer it is about, so the CLI can print a
single line such as ``bundle/config.json: /process/args: must be a list`` and exit
with the documented code. Anything that is not an OciSystemdError is a bug (123).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_CHANGES = 1  # plan/apply --check: changes pending; validate: invalid
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 123


class OciSystemdError(Exception):
    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, *, file: str | None = None, pointer: str | None = None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.pointer = pointer

    def one_line(self) -> str:
        parts = [p for p in (self.file, self.pointer) if p is not None]
        parts.append(self.message)
        # A message must stay one line even when it quotes hostile input.
        return ": ".join(parts).replace("\n", "\\n").replace("\r", "\\r")

    def naming(self, file: str) -> OciSystemdError:
        """This error, about `file` when it names no file itself. The pure core raises
        errors about a config without knowing where it was read; the edge that read it
        names it, with a new error rather than by editing the one raised."""
        if self.file is not None:
            return self
        return type(self)(self.message, file=file, pointer=self.pointer)


class BundleError(OciSystemdError):
    """The bundle on disk cannot be read or written (missing, not a directory, EACCES)."""


class ConfigError(OciSystemdError):
    """config.json is not a usable OCI runtime config (bad JSON, wrong types)."""


class PolicyError(OciSystemdError):
    """A policy document in patches/ (or --policy DIR) is invalid."""


class OptionsError(OciSystemdError):
    """Command-line options contradict each other or the policy."""


class SchemaError(OciSystemdError):
    """The OCI runtime-spec JSON schema cannot be found or loaded."""


class StateError(OciSystemdError):
    """The OCI state JSON a hook receives on stdin is unusable."""


class CopyUpError(OciSystemdError):
    """The copy-up helper refused or failed to copy image content."""

    exit_code = EXIT_CHANGES  # the helper's documented 1: refused or failed


def internal_error_line(exc: BaseException) -> str:
    """The one line a bug is reported in (exit 123), never a traceback by default."""
    message = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return f"internal error: {message} (set OCI_SYSTEMD_DEBUG=1 for a traceback)"
