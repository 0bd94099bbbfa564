"""Which containers count as systemd (patches/detection.json)."""

from __future__ import annotations

import pytest

from tests.harness.planning import POLICY, SYSTEMD_ROOTFS, run, runc_config
from transformer.concerns.detection import detect
from transformer.errors import ConfigError
from transformer.rootfs import DescribedRootfs, EmptyRootfs

BUSYBOX = DescribedRootfs({"/sbin/init": {"symlink": "/bin/busybox"}, "/bin/busybox": "file"})
USRMERGE = DescribedRootfs(
    {
        "/sbin": {"symlink": "usr/sbin"},
        "/usr/sbin/init": {"symlink": "../lib/systemd/systemd"},
        "/usr/lib/systemd/systemd": "file",
        "/usr/bin/tini": "file",
        "/sbin/loop": {"symlink": "/sbin/loop"},
        "/escape": {"symlink": "../../../../../lib/systemd/systemd"},
        "/app": {"symlink": "/dev/init"},
    }
)

TABLE = [
    # (args, rootfs, env, expected)
    (["/sbin/init"], EmptyRootfs(), [], True),
    (["/usr/sbin/init"], EmptyRootfs(), [], True),
    (["/usr/local/sbin/init"], EmptyRootfs(), [], True),
    (["/lib/systemd/systemd"], EmptyRootfs(), [], True),
    (["systemd", "--log-level=debug"], EmptyRootfs(), [], True),
    (["init"], EmptyRootfs(), [], True),
    (["/dev/init", "--", "/sbin/init"], EmptyRootfs(), [], False),
    (["/sbin/init"], BUSYBOX, [], False),
    (["/sbin/init"], USRMERGE, [], True),
    (["/sbin/loop"], USRMERGE, [], False),
    # ".." stops at the rootfs top: /lib/systemd/systemd *inside*, absent there, so judged by name.
    (["/escape"], USRMERGE, [], True),
    (["/app"], USRMERGE, [], False),
    (["/usr/bin/tini"], USRMERGE, [], False),
    (["/bin/sh"], EmptyRootfs(), [], False),
    (["/bin/sh", "-c", "exec /sbin/init"], EmptyRootfs(), [], True),
    (["/bin/bash", "-ec", "FOO=1 exec /usr/sbin/init --foo"], EmptyRootfs(), [], True),
    (["sh", "-c", "/sbin/init"], BUSYBOX, [], False),
    (["/bin/sh", "-c", "echo ok"], EmptyRootfs(), [], False),
    (["/bin/sh", "-c", "'unterminated"], EmptyRootfs(), [], False),
    (["/bin/sh", "-c", ""], EmptyRootfs(), [], False),
    (["/bin/sh", "/sbin/init"], EmptyRootfs(), [], False),
    (["/sbin/init"], EmptyRootfs(), ["oci-systemd-hook=disabled"], False),
    (["/sbin/init"], EmptyRootfs(), ["oci-systemd-hook=DISABLED"], False),
    (["/sbin/init"], EmptyRootfs(), ["oci-systemd-hook=not-disabled"], True),
    (["/sbin/init"], EmptyRootfs(), ["oci-systemd-hook=disabled-later"], True),
    (["/sbin/init"], EmptyRootfs(), ["xoci-systemd-hook=disabled"], True),
]


@pytest.mark.parametrize("args,rootfs,env,expected", TABLE, ids=[" ".join(t[0]) + " " + " ".join(t[2]) for t in TABLE])
def test_detection_table(args, rootfs, env, expected):
    config = {"ociVersion": "1.0.2", "process": {"args": args, "env": env}}
    assert detect(config, rootfs, POLICY.detection, force=False).systemd is expected


def test_annotation_opts_in_and_out():
    on = {"ociVersion": "1.0.2", "process": {"args": ["/bin/app"]}, "annotations": {"oci-systemd/enabled": "true"}}
    off = {"ociVersion": "1.0.2", "process": {"args": ["/sbin/init"]}, "annotations": {"oci-systemd/enabled": "false"}}
    assert detect(on, EmptyRootfs(), POLICY.detection, False).systemd
    assert not detect(off, EmptyRootfs(), POLICY.detection, False).systemd


def test_bad_annotation_value_names_its_pointer():
    config = {"ociVersion": "1.0.2", "process": {"args": ["/sbin/init"]}, "annotations": {"oci-systemd/enabled": "maybe"}}
    with pytest.raises(ConfigError) as err:
        detect(config, EmptyRootfs(), POLICY.detection, False)
    assert err.value.pointer == "/annotations/oci-systemd~1enabled"


def test_force_overrides_command_and_env_opt_out():
    config = runc_config(process__args=["/usr/bin/app"])
    config["process"]["env"].append("oci-systemd-hook=disabled")
    assert detect(config, EmptyRootfs(), POLICY.detection, force=True).systemd


def test_non_systemd_gets_empty_patch_and_a_note():
    result = run(runc_config(process__args=["/bin/sh", "-c", "echo ok"]), SYSTEMD_ROOTFS)
    assert result.patch() == []
    assert not result.systemd
    assert any("not a systemd container" in n.message for n in result.notes)


def test_no_process_is_not_systemd():
    result = run({"ociVersion": "1.0.2"})
    assert result.patch() == [] and not result.systemd
