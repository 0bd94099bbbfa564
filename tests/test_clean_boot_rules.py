"""The clean-boot rules of issue 12 (tests/harness/clean_boot.py), on journal lines that
real boots wrote: runc 1.1.5 with oci-systemd's defaults on the hybrid host, 2026-12-03,
``journalctl -b -p warning -o json`` inside bullseye, bookworm (also with a user
namespace), trixie and sid images, plus PID 1's console lines of a boot with a terminal.
Pure: no container is started here."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.harness import clean_boot
from tests.harness.clean_boot import JournalEntry

E = JournalEntry

# Every line at err or worse that the services images wrote (each release, and bookworm
# with a user namespace), verbatim.
SERVICES_ERR = [
    E("rsyslogd", "imklog: cannot open kernel log (/proc/kmsg): Operation not permitted.", 3, "rsyslog.service"),
    E("rsyslogd", "activation of module imklog failed [v8.2102.0 try https://www.rsyslog.com/e/2145 ]", 3,
      "rsyslog.service"),  # bullseye
    E("rsyslogd", "activation of module imklog failed [v8.2302.0 try https://www.rsyslog.com/e/2145 ]", 3,
      "rsyslog.service"),  # bookworm
    E("rsyslogd", "activation of module imklog failed [v8.2504.0 try https://www.rsyslog.com/e/2145 ]", 3,
      "rsyslog.service"),  # trixie
    E("rsyslogd", "activation of module imklog failed [v8.2610.0 try https://www.rsyslog.com/e/2145 ]", 3,
      "rsyslog.service"),  # sid
    E("rsyslogd", "imklog: cannot open kernel log (/proc/kmsg): Permission denied.", 3,
      "rsyslog.service"),  # bookworm with a user namespace
]

# Warning-level lines, each with who causes it.
WARNINGS = [
    (E("(d-logind)", "systemd-logind.service: ProtectHostname=yes is configured, but UTS namespace setup is "
                     "prohibited (container manager?), ignoring namespace setup.", 4, "systemd-logind.service"),
     "config"),
    (E("systemd", "systemd-logind.service: ProtectHostname=yes is configured, but UTS namespace setup is "
                  "prohibited (container manager?), ignoring namespace setup.", 4, "systemd-logind.service"),
     "config"),  # bullseye's systemd 247 logs it as "systemd"
    (E("(s-server)", "redis-server.service: ProtectHostname=yes is configured, but UTS namespace setup is "
                     "prohibited (container manager?), ignoring namespace setup.", 4, "redis-server.service"),
     "config"),
    (E("(systemd-logind)", "systemd-logind.service: ProtectHostname=yes is configured, but UTS namespace setup is "
                           "prohibited (container manager?), ignoring namespace setup.", 4, "systemd-logind.service"),
     "config"),
    (E("dbus-daemon", "[system] org.freedesktop.DBus.Error.AccessDenied: Failed to set fd limit to 65536: "
                      "Operation not permitted", 4, "dbus.service"), "runtime"),
    (E("named", "max open files (1024) is smaller than max sockets (21000)", 4, "named.service"), "runtime"),
    (E("named", "managed-keys-zone: Unable to fetch DNSKEY set '.': failure", 4, "named.service"), "runtime"),
    (E("postfix/postfix-script", "warning: not owned by root: /var/spool/postfix/etc/resolv.conf", 4,
       "postfix.service"), "image"),
    (E("systemd-resolved", "Failed to determine the local hostname and LLMNR/mDNS names, ignoring: Invalid argument",
       4, "systemd-resolved.service"), "image"),
    (E("/etc/mysql/debian-start", "Looking for 'mariadb' as: /usr/bin/mariadb", 4), "image"),
    (E("/etc/mysql/debian-start", "This installation of MariaDB is already upgraded to 10.5.23-MariaDB.", 4), "image"),
    (E("/etc/mysql/debian-start", "There is no need to run mysql_upgrade again for 10.5.23-MariaDB.", 4), "image"),
    (E("/etc/mysql/debian-start", "You can use --force if you still want to run mysql_upgrade", 4), "image"),
    # PID 1 on the console before journald runs (a boot with a terminal)
    (E("systemd", "Failed to set hostname to <vm>: Operation not permitted", 4), "config"),
    (E("systemd", "Failed to create symlink /sys/fs/cgroup/cpu: File exists", 3), "host"),
    (E("systemd", "Failed to create symlink /sys/fs/cgroup/cpuacct: File exists", 3), "host"),
    (E("systemd", "systemd-journald.service: unit configures an IP firewall, but the local system does not "
                  "support BPF/cgroup firewalling.", 4), "config"),
    (E("systemd", "system-getty.slice: unit configures an IP firewall, but the local system does not support "
                  "BPF/cgroup firewalling.", 4), "config"),  # bullseye
    (E("systemd", "(This warning is only shown for the first unit using IP firewalling.)", 4), "config"),
    (E("systemd", "systemd-journald.service: (This warning is only shown for the first unit using IP "
                  "firewalling.)", 4), "config"),  # trixie
    (E("systemd", "Neither libbpf.so.1 nor libbpf.so.0 are installed, cgroup BPF features disabled.", 4), "image"),
    (E("systemd", "Failed to open libbpf, cgroup BPF features disabled: Operation not supported", 4), "image"),
]

# A real entry as journalctl -o json wrote it (bookworm services, fields trimmed).
DBUS_JSON = json.dumps({
    "PRIORITY": "4", "SYSLOG_IDENTIFIER": "dbus-daemon", "_COMM": "dbus-daemon", "_SYSTEMD_UNIT": "dbus.service",
    "MESSAGE": "[system] org.freedesktop.DBus.Error.AccessDenied: Failed to set fd limit to 65536: "
               "Operation not permitted",
    "_PID": "49", "SYSLOG_PID": "49", "_TRANSPORT": "syslog", "_CAP_EFFECTIVE": "a80425fb"})
LOGIND_JSON = json.dumps({
    "UNIT": "systemd-logind.service", "_COMM": "(d-logind)", "_PID": "75", "CODE_FILE": "src/core/execute.c",
    "SYSLOG_IDENTIFIER": "(d-logind)", "PRIORITY": "4", "CODE_FUNC": "apply_protect_hostname",
    "MESSAGE": "systemd-logind.service: ProtectHostname=yes is configured, but UTS namespace setup is prohibited "
               "(container manager?), ignoring namespace setup.",
    "_SYSTEMD_UNIT": "systemd-logind.service", "_TRANSPORT": "journal"})


# ---- err or worse --------------------------------------------------------------------------

@pytest.mark.parametrize("entry", SERVICES_ERR, ids=str)
def test_every_err_line_of_the_services_images_is_explained(entry):
    assert clean_boot.unexplained_errors([entry], "services") == []


def test_a_minimal_image_allows_no_err_line():
    assert clean_boot.unexplained_errors(SERVICES_ERR, "minimal") == SERVICES_ERR


@pytest.mark.parametrize("entry", [
    # PID 1's own err line (console), not rsyslog's
    E("systemd", "Failed to create symlink /sys/fs/cgroup/cpu: File exists", 3),
    # the same text from another program
    E("rsyslog-helper", "imklog: cannot open kernel log (/proc/kmsg): Operation not permitted.", 3),
    # the same program, another reason
    E("rsyslogd", "imklog: cannot open kernel log (/proc/kmsg): No such file or directory.", 3),
    # a rule's text with something after it (rules match the whole message)
    E("rsyslogd", "imklog: cannot open kernel log (/proc/kmsg): Operation not permitted. and more", 3),
    E("rsyslogd", "activation of module imuxsock failed [v8.2302.0 try https://www.rsyslog.com/e/2145 ]", 3),
], ids=str)
def test_lines_near_an_allowed_one_are_not_explained(entry):
    assert clean_boot.unexplained_errors([entry], "services") == [entry]


def test_only_err_or_worse_is_judged():
    warnings = [entry for entry, _ in WARNINGS if entry.priority > clean_boot.ERR]
    assert warnings and clean_boot.unexplained_errors(warnings, "minimal") == []
    crit = E("systemd", "Freezing execution.", clean_boot.CRIT)
    assert clean_boot.unexplained_errors([crit], "services") == [crit]


# ---- the check on a container ---------------------------------------------------------------

class FakeContainer:
    """Answers ``journalctl -b -p err -o json`` with fixed output, like RuncContainer.exec."""

    def __init__(self, stdout: str, returncode: int = 0, stderr: str = "") -> None:
        self.answer = (stdout, returncode, stderr)
        self.calls: list[tuple[str, ...]] = []

    def exec(self, *cmd: str, timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess:
        self.calls.append(cmd)
        stdout, rc, stderr = self.answer
        return subprocess.CompletedProcess(cmd, rc, stdout, stderr)


def _json(entry: JournalEntry) -> str:
    return json.dumps({"SYSLOG_IDENTIFIER": entry.identifier, "MESSAGE": entry.message,
                       "PRIORITY": str(entry.priority), "_SYSTEMD_UNIT": entry.unit})


def test_check_passes_a_services_boot_and_returns_the_explained_lines():
    c = FakeContainer("\n".join(_json(e) for e in SERVICES_ERR[:2]) + "\n")
    assert clean_boot.check_clean_journal(c, "services") == SERVICES_ERR[:2]
    assert c.calls == [("journalctl", "-b", "-p", "err", "-o", "json", "--no-pager")]


def test_check_passes_an_empty_journal_on_a_minimal_image():
    assert clean_boot.check_clean_journal(FakeContainer(""), "minimal") == []


def test_check_fails_with_the_offending_lines():
    bad = E("systemd", "Failed to create symlink /sys/fs/cgroup/cpu: File exists", 3)
    c = FakeContainer(_json(SERVICES_ERR[0]) + "\n" + _json(bad) + "\n")
    with pytest.raises(AssertionError) as info:
        clean_boot.check_clean_journal(c, "services")
    text = str(info.value)
    assert "systemd: Failed to create symlink /sys/fs/cgroup/cpu: File exists" in text
    assert text.index("does not explain") < text.index("cgroup/cpu") < text.index("explained (")
    with pytest.raises(AssertionError, match="imklog: cannot open kernel log"):
        clean_boot.check_clean_journal(FakeContainer(_json(SERVICES_ERR[0])), "minimal")


def test_a_failing_journalctl_is_a_failure_not_a_clean_journal():
    c = FakeContainer("", returncode=1, stderr="No journal files were found.")
    with pytest.raises(AssertionError, match="No journal files were found"):
        clean_boot.check_clean_journal(c, "minimal")


def test_an_unknown_flavour_is_refused_before_asking_the_container():
    c = FakeContainer("")
    with pytest.raises(ValueError, match="flavour"):
        clean_boot.check_clean_journal(c, "server")
    assert c.calls == []


# ---- reading journalctl -o json ------------------------------------------------------------

def test_a_real_json_entry_is_read():
    assert JournalEntry.from_json(DBUS_JSON) == WARNINGS[4][0]
    # PID 1 names the unit in UNIT, the executor's own unit is _SYSTEMD_UNIT: same here
    assert JournalEntry.from_json(LOGIND_JSON) == WARNINGS[0][0]


def test_fields_that_are_not_utf8_come_as_byte_arrays():
    fields = json.loads(DBUS_JSON)
    fields["MESSAGE"] = list("imklog: caf\u00e9 \xff".encode("latin-1"))
    fields.pop("SYSLOG_IDENTIFIER")  # falls back to _COMM
    entry = JournalEntry.from_json(json.dumps(fields))
    assert entry.identifier == "dbus-daemon"
    assert entry.message.startswith("imklog: caf") and "\ufffd" in entry.message


def test_parse_skips_what_is_not_an_entry():
    assert clean_boot.parse_journal_json("-- No entries --\n" + DBUS_JSON + "\n\n") == [WARNINGS[4][0]]


# ---- warnings ------------------------------------------------------------------------------

@pytest.mark.parametrize("entry,cause", WARNINGS, ids=lambda v: str(v)[:90])
def test_each_warning_seen_has_its_cause(entry, cause):
    [finding] = clean_boot.classify([entry])
    assert finding.cause == cause, f"{entry} classified as {finding.cause}"


def test_warnings_we_cause_are_ours_and_the_unclassified():
    startup = E("systemd", "Startup finished in 1.254s.", 6)  # a real line no rule knows
    found = clean_boot.warnings_we_cause([entry for entry, _ in WARNINGS] + [startup])
    want = [entry for entry, cause in WARNINGS if cause in ("config", "runtime")] + [startup]
    assert [f.entry for f in found] == want
    assert str(found[-1]).startswith("[unclassified] <6> systemd: Startup finished")


def test_every_rule_explains_a_line_that_was_seen():
    """No rule without a real line behind it, and no line explained twice."""
    seen = SERVICES_ERR + [entry for entry, _ in WARNINGS]
    for rule in (*clean_boot.ERR_ALLOWED["services"], *clean_boot.WARNINGS):
        assert any(rule.matches(e) for e in seen), f"no real line for {rule.message!r}"
    for e in seen:
        rules = [r for r in (*clean_boot.ERR_ALLOWED["services"], *clean_boot.WARNINGS) if r.matches(e)]
        assert len(rules) == 1, f"{e}: {len(rules)} rules"


def test_a_rule_says_why_and_what_nspawn_shows():
    with pytest.raises(ValueError, match="cause"):
        clean_boot.Explained("x", "y", "kernel", "why", "nspawn")
    with pytest.raises(ValueError, match="nspawn"):
        clean_boot.Explained("x", "y", "image", "why", "")
    for rule in (*clean_boot.ERR_ALLOWED["services"], *clean_boot.WARNINGS):
        assert rule.cause in clean_boot.CAUSES and rule.why and rule.nspawn
