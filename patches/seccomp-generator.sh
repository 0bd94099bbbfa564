#!/bin/sh
# oci-systemd: a systemd generator (systemd.generator(7)) bound into the container at
# /run/systemd/system-generators/. systemd runs it at boot and at every daemon-reload,
# inside the container, so units installed later are covered too.
#
# Why: from systemd 255 on, a unit with User= (or DynamicUser=) and any seccomp setting
# keeps CAP_SYS_ADMIN across the user change to load its filter, and fails with
# "Failed to keep CAP_SYS_ADMIN" (217/USER) when PID 1 does not hold it. A container
# whose root is the host's root must not hold it. systemd 252 loaded those filters under
# no_new_privs instead; 255 and later have no such fallback. So, only when PID 1 lacks
# CAP_SYS_ADMIN, each such unit gets a drop-in that turns its seccomp settings off, and
# nothing else. Its other sandboxing stays (User=, NoNewPrivileges=, capability sets);
# mount namespaces need CAP_SYS_ADMIN anyway and systemd skips them in a container.
# A unit with PrivateUsers= runs in a user namespace of its own, where systemd holds
# CAP_SYS_ADMIN: it is left alone. With a user namespace oci-systemd grants the
# (namespaced) CAP_SYS_ADMIN, and this generator does nothing.
#
# POSIX sh and awk only (both in Debian's minbase): it runs with the image's own /bin/sh, before any service.
#
# Cost: systemd gives all generators together 90 s (DEFAULT_TIMEOUT_USEC), kills them
# with SIGALRM after that, and then PID 1 stops with "Failed to start up manager" (exit
# 255). On a slow or busy machine (software emulation measured it) a process per unit
# file used that budget up on sid's 160 units. So the script starts a fixed number of
# processes, however many units there are: one awk reads every unit file and drop-in,
# one mkdir makes the drop-in directories, and one readlink runs per symlinked unit.
# Everything else is a shell builtin.
# OCI_SYSTEMD_GENERATOR_ROOT, _CAPBND and _VERSION exist for its tests.

set -u
late=${3:-}
[ -n "$late" ] || exit 0
root=${OCI_SYSTEMD_GENERATOR_ROOT:-}
capbnd=${OCI_SYSTEMD_GENERATOR_CAPBND:-}
if [ -z "$capbnd" ]; then
    while read -r key value; do
        [ "$key" = "CapBnd:" ] && { capbnd=$value; break; }
    done < /proc/self/status
fi
[ -n "$capbnd" ] || exit 0
# CAP_SYS_ADMIN is capability 21.
[ $(( (0x$capbnd >> 21) & 1 )) -eq 1 ] && exit 0
# systemd up to 254 loads such filters under no_new_privs: leave its units as they are.
# The version is in the name of systemd's private library (as the transformer reads it).
version=${OCI_SYSTEMD_GENERATOR_VERSION:-}
if [ -z "$version" ]; then
    for lib in "$root"/usr/lib/systemd/libsystemd-shared-*.so "$root"/usr/lib/*/systemd/libsystemd-shared-*.so \
               "$root"/usr/lib64/systemd/libsystemd-shared-*.so "$root"/lib/systemd/libsystemd-shared-*.so; do
        [ -f "$lib" ] || continue
        version=${lib##*/libsystemd-shared-}
        version=${version%%[!0-9]*}
        break
    done
fi
[ -n "$version" ] && [ "$version" -lt 255 ] && exit 0

# Every unit file, each followed by its drop-ins in precedence order, as awk's arguments.
dirs="/etc/systemd/system /run/systemd/system /usr/local/lib/systemd/system /usr/lib/systemd/system /lib/systemd/system"
seen=" "
set --
for dir in $dirs; do
    for unit in "$root$dir"/*.service; do
        [ -f "$unit" ] || continue
        name=${unit##*/}
        if [ -L "$unit" ]; then
            # An alias (another unit's name) is covered by that unit; a link to
            # /dev/null is a masked unit. A linked unit file keeps its own name.
            target=$(readlink "$unit")
            [ "${target##*/}" = "$name" ] || continue
        fi
        case "$seen" in *" $name "*) continue ;; esac
        seen="$seen$name "
        set -- "$@" "$unit"
        for d in $dirs; do
            for conf in "$root$d/$name.d"/*.conf; do
                [ -f "$conf" ] && set -- "$@" "$conf"
            done
        done
    done
done
[ "$#" -gt 0 ] || exit 0

# The last assignment of each key in [Service] wins (drop-ins after the unit); an empty
# assignment resets a list. Prints the units that need the drop-in, one a line.
needy=$(awk '
    function settle() {
        if (unit != "" && user && !userns)
            for (k in list) if (list[k]) { print unit; break }
        user = 0; userns = 0; split("", list)
    }
    FNR == 1 {
        name = FILENAME; sub(/\.d\/[^\/]*$/, "", name); sub(/.*\//, "", name)
        if (name != unit) { settle(); unit = name }
        section = ""
    }
    /^\[/ { section = $0; sub(/[ \t\r]+$/, "", section); next }
    section != "[Service]" || !match($0, /^[A-Za-z]+[ \t]*=/) { next }
    {
        key = substr($0, 1, RLENGTH); sub(/[ \t]*=$/, "", key)
        value = substr($0, RLENGTH + 1); sub(/^[ \t]+/, "", value); sub(/[ \t\r]+$/, "", value)
    }
    key == "User" { user = (value != "") }
    key == "DynamicUser" { user = user || (value ~ /^(yes|true|on|1)$/) }
    key == "PrivateUsers" { userns = (value != "" && value !~ /^(no|false|off|0)$/) }
    key ~ /^(SystemCallFilter|SystemCallArchitectures|SystemCallLog|RestrictAddressFamilies)$/ { list[key] = (value != "") }
    key ~ /^(RestrictNamespaces|RestrictRealtime|RestrictSUIDSGID|LockPersonality|MemoryDenyWriteExecute|PrivateDevices|ProtectClock|ProtectHostname|ProtectKernelTunables|ProtectKernelModules|ProtectKernelLogs)$/ {
        list[key] = (value != "" && value !~ /^(no|false|off|0)$/)
    }
    END { settle() }' "$@")
[ -n "$needy" ] || exit 0

set -f  # unit names are words, never patterns
set --
for name in $needy; do set -- "$@" "$late/$name.d"; done
mkdir -p "$@"
for name in $needy; do
    printf '%s\n' \
        "# Written by oci-systemd's generator: this container's PID 1 has no CAP_SYS_ADMIN, and" \
        "# systemd >= 255 cannot load this unit's seccomp filter across User= without it." \
        "[Service]" \
        "SystemCallFilter=" \
        "SystemCallArchitectures=" \
        "SystemCallLog=" \
        "RestrictAddressFamilies=" \
        "RestrictNamespaces=no" \
        "RestrictRealtime=no" \
        "RestrictSUIDSGID=no" \
        "LockPersonality=no" \
        "MemoryDenyWriteExecute=no" \
        "PrivateDevices=no" \
        "ProtectClock=no" \
        "ProtectHostname=no" \
        "ProtectKernelTunables=no" \
        "ProtectKernelModules=no" \
        "ProtectKernelLogs=no" > "$late/$name.d/99-oci-systemd-seccomp.conf"
done
exit 0
