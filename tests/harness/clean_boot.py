"""The clean-boot rule of issue 12, as data: which journal lines a booted container may
hold at priority err or worse, and which warning-level lines our setup causes.

The rule: on a minimal image ``journalctl -b -p err`` is empty; on a services image every
line at err or worse matches one entry of ``ERR_ALLOWED["services"]``, each of which says
why the line is there and what systemd-nspawn (systemd's reference container manager)
shows with the same image.  Anything else fails, with the offending lines.

What was measured (2026-12-03, runc 1.1.5, oci-systemd's defaults, this hybrid host and
the v2 namespace, with and without a user namespace; bullseye 247, bookworm 252, trixie
257, sid 262), every boot both with CAP_AUDIT_WRITE and without it (the same lines
either way, see ERR_ALLOWED and WARNINGS):
- every minimal image: no line at err or worse, no failed unit;
- every services image: rsyslog's two imklog lines, and nothing else;
- systemd-nspawn 252 on the same trees (its default capabilities, and with
  --drop-capability=CAP_AUDIT_CONTROL,CAP_AUDIT_WRITE): the same two lines for trixie and
  sid, none for bullseye and bookworm (see IMKLOG_OPEN for why).

Only what reaches the journal is judged.  PID 1 logs to /dev/kmsg or /dev/console until
journald runs, and a runc container without a terminal has neither, so those lines are
lost.  Booted with a terminal they were (bookworm v1 view): ``Failed to create symlink
/sys/fs/cgroup/cpu: File exists`` (err), ``Failed to set hostname to <vm>: Operation not
permitted`` (warning) and the BPF firewall warning; WARNINGS classifies them too, so that a
caller that captures the console can use the same table.

``warnings_we_cause`` sorts warning-level lines by who causes them: the config
oci-systemd writes, the runtime (runc and the ``runc spec`` defaults we keep), the image's
own configuration, or this host.  It returns ours and the ones nobody has classified yet.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Iterable, Protocol

# journalctl's priorities (syslog levels)
EMERG, ALERT, CRIT, ERR, WARNING = 0, 1, 2, 3, 4
# Who causes a line: the config oci-systemd writes; runc or the ``runc spec`` defaults the
# transformer keeps; the image's own configuration; this host.
CAUSES = ("config", "runtime", "image", "host")
OURS = ("config", "runtime")


@dataclass(frozen=True)
class JournalEntry:
    """One journal entry, as ``journalctl -o json`` gives it: who logged it, what, how bad."""

    identifier: str  # SYSLOG_IDENTIFIER, or _COMM when there is none
    message: str
    priority: int
    unit: str = ""  # _SYSTEMD_UNIT, or UNIT (a message PID 1 logs about a unit)

    @classmethod
    def from_json(cls, line: str) -> "JournalEntry":
        fields = json.loads(line)
        return cls(
            identifier=_text(fields.get("SYSLOG_IDENTIFIER") or fields.get("_COMM") or ""),
            message=_text(fields.get("MESSAGE", "")),
            priority=int(fields.get("PRIORITY", 6)),
            unit=_text(fields.get("_SYSTEMD_UNIT") or fields.get("UNIT") or ""),
        )

    def __str__(self) -> str:
        unit = f" ({self.unit})" if self.unit else ""
        return f"<{self.priority}> {self.identifier}: {self.message}{unit}"


def _text(value) -> str:
    # journalctl -o json writes a field that is not valid UTF-8 as an array of byte values
    if isinstance(value, list):
        return bytes(value).decode(errors="replace")
    return str(value)


def parse_journal_json(text: str) -> list[JournalEntry]:
    """The entries of ``journalctl -o json`` output (one JSON object a line)."""
    return [JournalEntry.from_json(line) for line in text.splitlines() if line.startswith("{")]


@dataclass(frozen=True)
class Explained:
    """A journal line we understand: who logs it (``identifier``, a regular expression
    matched in full), its text (``message``, matched in full), who causes it (CAUSES),
    why, and what systemd-nspawn showed with the same image (the evidence that an image
    causes it, or that our setup does)."""

    identifier: str
    message: str
    cause: str
    why: str
    nspawn: str

    def __post_init__(self) -> None:
        if self.cause not in CAUSES:
            raise ValueError(f"cause {self.cause!r} is not one of {CAUSES}")
        if not self.why or not self.nspawn:
            raise ValueError(f"{self.message!r}: every entry says why, and what nspawn shows")
        re.compile(self.identifier)
        re.compile(self.message)

    def matches(self, entry: JournalEntry) -> bool:
        return (re.fullmatch(self.identifier, entry.identifier) is not None
                and re.fullmatch(self.message, entry.message) is not None)


# ---- err or worse --------------------------------------------------------------------------

IMKLOG_OPEN = Explained(
    identifier=r"rsyslogd",
    # "Permission denied" with a user namespace, "Operation not permitted" without
    message=r"imklog: cannot open kernel log \(/proc/kmsg\): (Operation not permitted|Permission denied)\.",
    cause="image",
    why="the image's /etc/rsyslog.conf loads imklog, which reads the kernel's ring buffer from "
        "/proc/kmsg; that takes CAP_SYSLOG, which no container gets (the ring buffer is the "
        "host's, not the container's). Same line with and without CAP_AUDIT_WRITE.",
    nspawn="shown too for trixie and sid (nspawn 252: 'imklog: cannot open kernel log (/proc/kmsg): "
           "Operation not permitted.'); not for bullseye and bookworm, because nspawn binds a FIFO "
           "over /proc/kmsg, which imklog opens",
)
IMKLOG_ACTIVATION = Explained(
    identifier=r"rsyslogd",
    message=r"activation of module imklog failed \[v8\.\d+\.\d+ try https://www\.rsyslog\.com/e/2145 \]",
    cause="image",
    why="rsyslog's summary of the line above (IMKLOG_OPEN): the module is left out and rsyslog runs on",
    nspawn="shown too for trixie and sid, with the line above; not for bullseye and bookworm",
)

# What ``journalctl -b -p err`` may hold, by image flavour (rootfs_cache.FLAVOURS).
ERR_ALLOWED: dict[str, tuple[Explained, ...]] = {
    "minimal": (),
    "services": (IMKLOG_OPEN, IMKLOG_ACTIVATION),
}


def unexplained_errors(entries: Iterable[JournalEntry], flavour: str) -> list[JournalEntry]:
    """The entries at err or worse that no rule of ``flavour`` explains (all of them on a
    minimal image)."""
    allowed = ERR_ALLOWED[flavour]
    return [e for e in entries if e.priority <= ERR and not any(rule.matches(e) for rule in allowed)]


class Container(Protocol):
    """What the check needs of runc_harness.RuncContainer."""

    def exec(self, *cmd: str, timeout: float = 60, check: bool = False): ...


def journal(c: Container, priority: str, timeout: float = 30) -> list[JournalEntry]:
    """``journalctl -b -p PRIORITY -o json`` inside ``c`` ("err": err or worse;
    "warning..warning": warning only).  A journalctl that fails is a failure, never an
    empty journal."""
    p = c.exec("journalctl", "-b", "-p", priority, "-o", "json", "--no-pager", timeout=timeout)
    assert p.returncode == 0, f"journalctl -b -p {priority} failed (rc={p.returncode}): {p.stderr}"
    return parse_journal_json(p.stdout)


def check_clean_journal(c: Container, flavour: str, timeout: float = 30) -> list[JournalEntry]:
    """The clean-boot rule: nothing at err or worse on a minimal image; on a services image
    only lines that ERR_ALLOWED explains.  Returns the explained lines (for a report)."""
    if flavour not in ERR_ALLOWED:
        raise ValueError(f"unknown flavour {flavour!r}; expected one of {sorted(ERR_ALLOWED)}")
    entries = journal(c, "err", timeout)
    bad = unexplained_errors(entries, flavour)
    explained = [e for e in entries if e not in bad]
    assert bad == [], (
        f"journalctl -b -p err on a {flavour} image holds lines that the clean-boot rule does not explain:\n"
        + "\n".join(f"  {e}" for e in bad)
        + ("\nexplained (clean_boot.ERR_ALLOWED):\n" + "\n".join(f"  {e}" for e in explained) if explained else ""))
    return explained


# ---- warnings ------------------------------------------------------------------------------

# systemd logs a unit's sandboxing warning under "(" + the first 15 characters of its
# command name + ")" from 252 on, and under "systemd" in 247.
_EXECUTOR = r"systemd|\(.{1,15}\)"

PROTECT_HOSTNAME = Explained(
    identifier=_EXECUTOR,
    message=r"\S+\.service: ProtectHostname=yes is configured, but UTS namespace setup is prohibited "
            r"\(container manager\?\), ignoring namespace setup\.",
    cause="config",
    why="a unit with ProtectHostname=yes (logind on every release; rsyslog, redis and postfix on trixie "
        "and sid) wants a UTS namespace of its own, which takes CAP_SYS_ADMIN; the policy grants it only "
        "with a user namespace (patches/capabilities.json), where the line is gone. The unit runs on "
        "without the namespace.",
    nspawn="not shown (nspawn grants CAP_SYS_ADMIN)",
)
DBUS_FD_LIMIT = Explained(
    identifier=r"dbus-daemon",
    message=r"\[system\] org\.freedesktop\.DBus\.Error\.AccessDenied: Failed to set fd limit to 65536: "
            r"Operation not permitted",
    cause="runtime",
    why="dbus 1.14 (bullseye, bookworm) raises RLIMIT_NOFILE to 65536; runc spec's config sets it to "
        "1024:1024 and the container lacks CAP_SYS_RESOURCE to go above the hard limit. Not fixable "
        "in the config here: runc refuses a hard limit above this host's 20000 ('error setting rlimit "
        "type 7: operation not permitted', measured with 524288).",
    nspawn="shown too (bullseye, bookworm): nspawn keeps this host's hard limit, 20000",
)
NAMED_MAX_OPEN_FILES = Explained(
    identifier=r"named",
    message=r"max open files \(\d+\) is smaller than max sockets \(\d+\)",
    cause="runtime",
    why="bind9 9.16 (bullseye) compares RLIMIT_NOFILE with its socket pool; runc spec's 1024",
    nspawn="shown too on bullseye, with this host's hard limit: 'max open files (20000) is smaller than "
           "max sockets (21000)'",
)
NAMED_DNSKEY = Explained(
    identifier=r"named",
    message=r"managed-keys-zone: Unable to fetch DNSKEY set '\.': failure",
    cause="runtime",
    why="bind9 fetches the root zone's keys at start; runc spec's network namespace has only lo. "
        "It comes a while after boot, so a check may or may not see it.",
    nspawn="not shown within the same time (nspawn shares the host's network namespace)",
)
POSTFIX_RESOLV_CONF = Explained(
    identifier=r"postfix/postfix-script",
    message=r"warning: not owned by root: /var/spool/postfix/etc/resolv\.conf",
    cause="image",
    why="postfix (trixie, sid) copies /etc/resolv.conf into its chroot; the image's /etc/resolv.conf is "
        "systemd-resolved's stub file, which is not owned by root",
    nspawn="shown too (trixie, sid)",
)
RESOLVED_HOSTNAME = Explained(
    identifier=r"systemd-resolved",
    message=r"Failed to determine the local hostname and LLMNR/mDNS names, ignoring: Invalid argument",
    cause="image",
    why="systemd-resolved 257 (trixie); seen in one boot of two under runc",
    nspawn="shown too (trixie: five times in one boot)",
)
MARIADB_DEBIAN_START = Explained(
    identifier=r"/etc/mysql/debian-start",
    message=r"(Looking for '.+' as: .+|This installation of MariaDB is already upgraded to .+\."
            r"|There is no need to run mysql_upgrade again for .+\.|You can use --force if you still want to "
            r"run mysql_upgrade)",
    cause="image",
    why="mariadb 10.5's /etc/mysql/debian-start (bullseye) logs its upgrade check at warning level",
    nspawn="shown too (bullseye, the same five lines)",
)
# PID 1's own lines before journald runs: not in the journal of a runc container (no
# /dev/kmsg, no /dev/console without a terminal), seen on its console with one.
HOSTNAME_NOT_SET = Explained(
    identifier=r"systemd",
    message=r"Failed to set hostname to <.+>: Operation not permitted",
    cause="config",
    why="the image has an /etc/hostname (debootstrap copies the build machine's, 'vm' here) and PID 1 "
        "lacks CAP_SYS_ADMIN to set it, so the container keeps runc spec's 'runc'. Gone with a user "
        "namespace ('Hostname set to <vm>.'). A config hostname equal to the image's /etc/hostname "
        "removes it (measured): systemd calls sethostname only when the name differs.",
    nspawn="not shown ('Hostname set to <vm>.': nspawn grants CAP_SYS_ADMIN)",
)
CGROUP_SYMLINK = Explained(
    identifier=r"systemd",
    message=r"Failed to create symlink /sys/fs/cgroup/(cpu|cpuacct): File exists",
    cause="host",
    why="err level, console only: this host mounts cpu and cpuacct as two v1 hierarchies, and systemd "
        "(247 to 257, v1 view) wants cpu and cpuacct as links to a joint cpu,cpuacct; the boot goes on",
    nspawn="not shown (nspawn builds its own cgroup mounts for the container)",
)
BPF_FIREWALL = Explained(
    identifier=r"systemd",
    message=r"(\S+: unit configures an IP firewall, but the local system does not support BPF/cgroup firewalling\."
            r"|(\S+: )?\(This warning is only shown for the first unit using IP firewalling\.\))",
    cause="config",
    why="console only, the v1 view (bullseye, bookworm, trixie on this hybrid host): IP firewalling needs "
        "the unit in a cgroup2 hierarchy with BPF; gone in the unified view, which the transformer "
        "chooses against for systemd <= 257 (it would hide the v1 limit files)",
    nspawn="not shown",
)
NO_LIBBPF = Explained(
    identifier=r"systemd",
    message=r"(Neither libbpf\.so\.1 nor libbpf\.so\.0 are installed, cgroup BPF features disabled\."
            r"|Failed to open libbpf, cgroup BPF features disabled: Operation not supported)",
    cause="image",
    why="console only: a minbase image has no libbpf (trixie, sid)",
    nspawn="not looked at (the console of nspawn's sid and trixie boots was not read for it)",
)

WARNINGS: tuple[Explained, ...] = (
    PROTECT_HOSTNAME, DBUS_FD_LIMIT, NAMED_MAX_OPEN_FILES, NAMED_DNSKEY, POSTFIX_RESOLV_CONF,
    RESOLVED_HOSTNAME, MARIADB_DEBIAN_START, HOSTNAME_NOT_SET, CGROUP_SYMLINK, BPF_FIREWALL, NO_LIBBPF,
)


@dataclass(frozen=True)
class Finding:
    """A warning-level line and the rule that explains it (None: nobody has classified it)."""

    entry: JournalEntry
    rule: Explained | None

    @property
    def cause(self) -> str:
        return self.rule.cause if self.rule else "unclassified"

    def __str__(self) -> str:
        return f"[{self.cause}] {self.entry}"


def classify(entries: Iterable[JournalEntry]) -> list[Finding]:
    """Each entry with the first WARNINGS rule that matches it."""
    return [Finding(e, next((rule for rule in WARNINGS if rule.matches(e)), None)) for e in entries]


def warnings_we_cause(entries: Iterable[JournalEntry]) -> list[Finding]:
    """The lines our setup causes (the config we write, or the runtime as we leave it),
    and the ones no rule classifies yet: a new line is ours until shown otherwise."""
    return [f for f in classify(entries) if f.rule is None or f.rule.cause in OURS]
