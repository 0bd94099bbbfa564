"""Options.side_dir: where the side files go, and so the sources of their bind mounts."""

from __future__ import annotations

import jsonpatch
import pytest

from tests.harness.planning import options, run, runc_config
from transformer.errors import OptionsError

SIDE = "/run/oci-systemd/0123456789abcdef0123456789abcdef"
# Every side file a systemd bundle gets, sorted
SIDE_FILES = ("container-manager", "container-uuid", "machine-id", "masked.unit", "seccomp-generator")


def _side_sources(result) -> dict[str, dict]:
    paths = {s.path for s in result.side_files}
    return {m["source"]: m for m in result.config["mounts"] if m.get("source") in paths}


def test_absolute_side_dir_is_the_source_of_every_side_file_and_the_patch_agrees():
    config = runc_config()
    result = run(config, side_dir=SIDE)
    paths = sorted(s.path for s in result.side_files)
    assert paths == [f"{SIDE}/{name}" for name in SIDE_FILES]
    # Every side file is the source of a bind mount, and no bind source is left
    # relative to a bundle directory that a caller such as podman's hook does not know.
    assert sorted(_side_sources(result)) == paths
    assert not [m for m in result.config["mounts"] if m["type"] == "bind" and not m["source"].startswith("/")]
    assert jsonpatch.apply_patch(config, result.patch()) == result.config


def test_default_side_dir_is_the_policys_relative_directory():
    result = run(runc_config())
    assert sorted(s.path for s in result.side_files) == [
        f"oci-systemd/{name}" for name in SIDE_FILES]
    assert run(runc_config(), side_dir="oci-systemd") == result


def test_relative_side_dir_stays_relative_to_the_bundle():
    result = run(runc_config(), side_dir="side/files")
    assert sorted(_side_sources(result)) == [
        f"side/files/{name}" for name in SIDE_FILES]


@pytest.mark.parametrize("side_dir", ["", ".", "/", "/run//x", "/run/./x", "/run/x/", "a/../b", "../outside", "//run"])
def test_side_dir_is_validated_when_options_are_built(side_dir):
    with pytest.raises(OptionsError, match="--side-dir"):
        options(side_dir=side_dir)
