"""The oci-hooks(5) document for podman/CRI-O hooks.d directories."""

from __future__ import annotations

import json
import re

import pytest

from transformer.copyup.hooksconfig import hooks_config
from transformer.errors import OptionsError


def test_document_shape():
    doc = hooks_config("/usr/local/bin/oci-systemd-copyup")
    assert doc["version"] == "1.0.0"
    assert doc["hook"]["path"] == "/usr/local/bin/oci-systemd-copyup"
    # No DEST: a hooks.d file cannot know the bundle; the helper reads config.json.
    assert doc["hook"]["args"] == ["oci-systemd-copyup", "--stage", "prestart"]
    assert doc["hook"]["timeout"] > 0
    assert doc["stages"] == ["prestart"]
    assert set(doc["when"]) == {"commands"}
    json.dumps(doc)  # serialisable as is


@pytest.mark.parametrize(
    "args0, matches",
    [
        ("/sbin/init", True),
        ("init", True),
        ("/usr/lib/systemd/systemd", True),
        ("/lib/systemd/systemd", True),
        ("systemd", True),
        ("/bin/sh", False),
        ("/usr/bin/initialize", False),
        ("/usr/bin/systemd-nspawn", False),
        ("/usr/bin/my-init", False),
    ],
)
def test_commands_match_init_and_systemd(args0, matches):
    # containers/common matches with an unanchored regexp search (Go MatchString);
    # re.search is the same for these patterns.
    commands = hooks_config("/x")["when"]["commands"]
    assert any(re.search(p, args0) for p in commands) is matches


@pytest.mark.parametrize("bad", ["relative/path", "", "/nul\0"])
def test_hook_path_must_be_absolute(bad):
    with pytest.raises(OptionsError):
        hooks_config(bad)


def test_args_reach_the_real_helper():
    from transformer.copyup.main import parse_argv

    assert parse_argv(hooks_config("/x")["hook"]["args"][1:]) == ("prestart", [])
