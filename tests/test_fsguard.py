"""What the transformer and the copy-up helper share (transformer/fsguard.py): one
config reader with one set of JSON rules, one rootfs look-up, one O_NOFOLLOW walk;
and both sides giving the same answer with them."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from transformer.bundle import read_bundle
from transformer.copyup.bundle_view import load_config, rootfs_of
from transformer.errors import ConfigError, OciSystemdError
from transformer.fsguard import (
    LIST,
    MAX_CONFIG_BYTES,
    MAX_WRITTEN_CONFIG_BYTES,
    TOP,
    decode,
    open_beneath,
    read_config_file,
)

GOOD = {"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "process": {"args": ["/sbin/init"]}}


def _bundle(tmp_path: Path, config: dict | bytes) -> Path:
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    data = config if isinstance(config, bytes) else json.dumps(config).encode()
    (bundle / "config.json").write_bytes(data)
    return bundle


# -- both sides read a bundle alike ----------------------------------------------------

REFUSED = {
    "duplicate key": b'{"ociVersion": "1.0.2", "root": {"path": "rootfs", "path": "/"}}',
    "number out of range": b'{"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "x": [1e999]}',
    "lone surrogate": b'{"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "hostname": "\\ud800"}',
    "NaN": b'{"ociVersion": "1.0.2", "x": NaN}',
    "byte-order mark": b'\xef\xbb\xbf{"ociVersion": "1.0.2"}',
    "not UTF-8": b'{"hostname": "caf\xe9"}',
    "empty": b" \n",
    "truncated": b'{"root": ',
    "nested too deeply": b"[" * 100_000 + b"]" * 100_000,
    "not an object": b"[]",
    "root not an object": b'{"root": 5}',
    "root.path not a string": b'{"root": {"path": 7}}',
    "root.path empty": b'{"root": {"path": ""}}',
    "root.path missing": b'{"root": {"readonly": true}}',
    "rootfs missing": b'{"root": {"path": "elsewhere"}}',
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_both_sides_refuse_a_config_alike(tmp_path: Path, name: str):
    bundle = _bundle(tmp_path, REFUSED[name])
    with pytest.raises(OciSystemdError) as transformer_side:
        read_bundle(str(bundle))
    with pytest.raises(OciSystemdError) as helper_side:
        rootfs_of(str(bundle), load_config(str(bundle)))
    assert helper_side.value.one_line() == transformer_side.value.one_line()
    assert helper_side.value.exit_code == transformer_side.value.exit_code == 2


def test_both_sides_find_the_same_rootfs(tmp_path: Path):
    bundle = _bundle(tmp_path, {**GOOD, "root": {"path": "./rootfs/"}})
    assert Path(rootfs_of(str(bundle), load_config(str(bundle)))) == Path(read_bundle(str(bundle)).rootfs.label)
    os.symlink("rootfs", bundle / "link")  # root.path itself may be a link: the runtime follows it
    (bundle / "config.json").write_text(json.dumps({**GOOD, "root": {"path": str(bundle / "link")}}))
    assert rootfs_of(str(bundle), load_config(str(bundle))) == str(bundle / "rootfs")


def test_size_limits(tmp_path: Path):
    """oci-systemd edits at most MAX_CONFIG_BYTES; the helper reads what it wrote, which
    may be larger (re-indented), up to MAX_WRITTEN_CONFIG_BYTES. Both refuse a larger
    file before reading it."""
    bundle = _bundle(tmp_path, b"")
    cfg = bundle / "config.json"
    cfg.write_bytes(json.dumps(GOOD).encode() + b" " * MAX_CONFIG_BYTES)
    with pytest.raises(ConfigError, match="larger than 4 MiB"):
        read_bundle(str(bundle))
    assert load_config(str(bundle)) == GOOD
    with open(cfg, "r+b") as f:
        f.truncate(MAX_WRITTEN_CONFIG_BYTES + 1)  # sparse: never read
    with pytest.raises(ConfigError, match="larger than 16 MiB"):
        load_config(str(bundle))


def test_only_the_helper_follows_a_symlinked_config(tmp_path: Path):
    """oci-systemd replaces config.json by a rename, which would replace a link; the
    helper only reads it, as the runtime does."""
    bundle = _bundle(tmp_path, GOOD)
    (bundle / "config.json").rename(bundle / "real.json")
    os.symlink("real.json", bundle / "config.json")
    with pytest.raises(OciSystemdError, match="symbolic link"):
        read_config_file(bundle / "config.json")
    assert load_config(str(bundle)) == GOOD


# -- the JSON rules ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "doc",
    ['{"a": [1, -2.5e3, true, false, null, "\\u00e9\\n"]}', "[]", '"x"', "  {}\n", '{"a": {"b": {}}}',
     '"\\ud83d\\ude00"'],
)
def test_decode_agrees_with_json(doc):
    assert decode(doc)[0] == json.loads(doc)


@pytest.mark.parametrize("doc", ["{", "[1,]", "{} {}", "", "NaN", "[Infinity]", '{"a" 1}', "\ufeff{}"])
def test_decode_rejects_like_json(doc):
    with pytest.raises(ValueError):
        decode(doc)


def test_decode_notes_only_what_may_be_a_problem():
    assert decode('{"a": [1, 2.5, "\\u00e9"]}')[1] is None
    for doc in ('{"a": 1, "a": 2}', "[1e999]", '["\\ud800"]', '["\\uDFFF"]'):
        assert decode(doc)[1] is not None, doc


# -- the walk ----------------------------------------------------------------------------


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_open_beneath_never_follows_a_link(tmp_path: Path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f").write_text("")
    (tmp_path / "a" / "file").write_text("")
    os.symlink("/etc", tmp_path / "a" / "link")
    os.symlink("b", tmp_path / "a" / "rel")
    top = os.open(tmp_path, TOP)
    before = _open_fds()
    try:
        fd = open_beneath(top, ["a", "b"], LIST)
        assert os.listdir(fd) == ["f"]
        os.close(fd)
        fd = open_beneath(top, [], LIST)  # no names: the directory itself, now readable
        assert os.fstat(fd).st_ino == os.stat(tmp_path).st_ino and sorted(os.listdir(fd)) == ["a"]
        os.close(fd)
        cases = [
            (["a", "link", "passwd"], errno.ENOTDIR, "/a/link", "is a symlink (not followed)"),
            (["a", "rel"], errno.ENOTDIR, "/a/rel", "is a symlink (not followed)"),
            (["a", "file", "x"], errno.ENOTDIR, "/a/file", "is not a directory"),
            (["a", "missing", "x"], errno.ENOENT, "/a/missing", os.strerror(errno.ENOENT)),
        ]
        for names, code, where, why in cases:
            with pytest.raises(OSError) as info:
                open_beneath(top, names, LIST)
            assert (info.value.errno, info.value.filename, info.value.strerror) == (code, where, why), names
        assert _open_fds() == before  # nothing left open on any path
    finally:
        os.close(top)
