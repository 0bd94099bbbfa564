"""The read-only look at the image: links resolve inside the rootfs, never out of it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from transformer.errors import BundleError
from transformer.rootfs import DescribedRootfs, HostRootfs, ResolveError

DESCRIPTION = {
    "/sbin": {"symlink": "usr/sbin"},
    "/usr/sbin/init": {"symlink": "../lib/systemd/systemd"},
    "/usr/lib/systemd/systemd": "file",
    "/lib": {"symlink": "usr/lib"},
    "/etc-link": {"symlink": "/etc"},
    "/up": {"symlink": "../../../../../../etc/shadow"},
    "/loop-a": {"symlink": "loop-b"},
    "/loop-b": {"symlink": "/loop-a"},
    "/run": "dir",
    "/var/run": {"symlink": "../run"},
    "/file": "file",
}


def build_tree(root: Path, description: dict) -> None:
    for path, spec in description.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(spec, dict):
            os.symlink(spec["symlink"], target)
        elif spec == "dir":
            target.mkdir(exist_ok=True)
        else:
            target.write_text("")


@pytest.fixture(params=["described", "host"])
def view(request, tmp_path):
    if request.param == "described":
        return DescribedRootfs(DESCRIPTION)
    build_tree(tmp_path, DESCRIPTION)
    return HostRootfs(tmp_path)


@pytest.mark.parametrize(
    "path,resolved",
    [
        ("/sbin/init", "/usr/lib/systemd/systemd"),
        ("/lib/systemd/systemd", "/usr/lib/systemd/systemd"),
        ("/etc-link/passwd", "/etc/passwd"),
        ("/up", "/etc/shadow"),
        ("/var/run/lock", "/run/lock"),
        ("/run/../../..", "/"),
        ("//run/./x/", "/run/x"),
        ("/file/below", "/file/below"),
        ("/missing/../run", "/run"),
    ],
)
def test_resolve_stays_inside(view, path, resolved):
    assert view.resolve(path) == resolved


def test_link_loops_are_errors_not_hangs(view):
    with pytest.raises(ResolveError):
        view.resolve("/loop-a")
    assert not view.exists("/loop-a")
    assert view.names("/loop-a") == ()
    assert view.destination("/loop-a") == "/loop-a"  # as written: the runtime refuses it


def test_queries(view):
    assert view.exists("/sbin/init") and view.exists("/var/run") and view.exists("/")
    assert view.names("/") == ("etc-link", "file", "lib", "loop-a", "loop-b", "run", "sbin", "up", "usr", "var")
    assert view.names("/lib") == ("systemd",)  # through usr/lib
    assert view.names("/file") == () and view.names("/missing") == () and view.names("/run") == ()
    assert view.destination("var/run/") == "/run"  # normalised, then resolved
    # The host has /etc/passwd and a full /etc; the image has neither.
    assert not view.exists("/etc-link/passwd")
    assert not view.exists("/up")
    assert view.names("/etc-link") == ()


def test_host_rootfs_never_reads_the_host(tmp_path):
    build_tree(tmp_path, {"/etc-link": {"symlink": "/etc"}, "/abs": {"symlink": "/etc/passwd"}})
    view = HostRootfs(tmp_path)
    assert Path("/etc/passwd").exists()
    assert not view.exists("/abs") and not view.exists("/etc-link/passwd")
    assert view.resolve("/abs") == "/etc/passwd"


def test_host_rootfs_refuses_a_missing_or_file_root(tmp_path):
    with pytest.raises(BundleError):
        HostRootfs(tmp_path / "nope")
    (tmp_path / "file").write_text("")
    with pytest.raises(BundleError):
        HostRootfs(tmp_path / "file")


def test_described_rootfs_rejects_bad_specs():
    with pytest.raises(ValueError):
        DescribedRootfs({"/x": "socket?"})
