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
# POSIX sh, sed and awk only (all in Debian's minbase): it runs with the image's own /bin/sh, before any service.
# OCI_SYSTEMD_GENERATOR_ROOT, _CAPBND and _VERSION exist for its tests.

set -u
late=${3:-}
[ -n "$late" ] || exit 0
root=${OCI_SYSTEMD_GENERATOR_ROOT:-}
capbnd=${OCI_SYSTEMD_GENERATOR_CAPBND:-$(sed -n 's/^CapBnd:[[:space:]]*//p' /proc/self/status)}
[ -n "$capbnd" ] || exit 0
# CAP_SYS_ADMIN is capability 21.
[ $(( (0x$capbnd >> 21) & 1 )) -eq 1 ] && exit 0
# systemd up to 254 loads such filters under no_new_privs: leave its units as they are.
version=${OCI_SYSTEMD_GENERATOR_VERSION:-$(systemctl --version 2>/dev/null | sed -n '1s/^systemd \([0-9]*\).*/\1/p')}
[ -n "$version" ] && [ "$version" -lt 255 ] && exit 0

dirs="/etc/systemd/system /run/systemd/system /usr/local/lib/systemd/system /usr/lib/systemd/system /lib/systemd/system"
seen=" "
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
        files="$unit"
        for d in $dirs; do
            for conf in "$root$d/$name.d"/*.conf; do
                [ -f "$conf" ] && files="$files $conf"
            done
        done
        # The last assignment of each key in [Service] wins (drop-ins after the unit);
        # an empty assignment resets a list. Values are folded to "on" or "off".
        verdict=$(sed -n -e '/^\[/h' -e 'G' -e 's/^\([A-Za-z]*\)=[[:space:]]*\(.*\)\n\[Service\]$/\1=\2/p' $files |
            awk -F= '
                { key = $1; value = $0; sub(/^[^=]*=[[:space:]]*/, "", value); sub(/[[:space:]]+$/, "", value) }
                key == "User" { user = (value != "") }
                key == "DynamicUser" { user = user || (value ~ /^(yes|true|on|1)$/) }
                key == "PrivateUsers" { userns = (value != "" && value !~ /^(no|false|off|0)$/) }
                key ~ /^(SystemCallFilter|SystemCallArchitectures|SystemCallLog|RestrictAddressFamilies)$/ { list[key] = (value != "") }
                key ~ /^(RestrictNamespaces|RestrictRealtime|RestrictSUIDSGID|LockPersonality|MemoryDenyWriteExecute|PrivateDevices|ProtectClock|ProtectHostname|ProtectKernelTunables|ProtectKernelModules|ProtectKernelLogs)$/ {
                    list[key] = (value != "" && value !~ /^(no|false|off|0)$/)
                }
                END {
                    seccomp = 0
                    for (k in list) if (list[k]) seccomp = 1
                    print (user && seccomp && !userns) ? "drop-in" : "none"
                }')
        [ "$verdict" = drop-in ] || continue
        mkdir -p "$late/$name.d"
        cat > "$late/$name.d/99-oci-systemd-seccomp.conf" <<EOF
# Written by oci-systemd's generator: this container's PID 1 has no CAP_SYS_ADMIN, and
# systemd >= 255 cannot load this unit's seccomp filter across User= without it.
[Service]
SystemCallFilter=
SystemCallArchitectures=
SystemCallLog=
RestrictAddressFamilies=
RestrictNamespaces=no
RestrictRealtime=no
RestrictSUIDSGID=no
LockPersonality=no
MemoryDenyWriteExecute=no
PrivateDevices=no
ProtectClock=no
ProtectHostname=no
ProtectKernelTunables=no
ProtectKernelModules=no
ProtectKernelLogs=no
EOF
    done
done
exit 0
