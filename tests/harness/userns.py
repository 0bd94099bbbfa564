"""User-namespaced containers for the end-to-end suite: the ID mapping, the config edit
that asks for it, and the ownership-shifted tree such a container needs.

With ``uidMappings``/``gidMappings`` 0 -> 100000 (size 65536), the container's uid N is
host uid 100000 + N.  A file the image gives to root must therefore be owned by host uid
100000 in the tree the container runs on, or the container's root cannot write it (an
unmapped owner reads back as nobody, 65534).  ``shift_owners`` makes such a tree: it is
what podman's ``--uidmap`` with a chown'ed layer, or LXC's unprivileged rootfs, holds.
"""

from __future__ import annotations

import json
import os
import stat
import struct
from pathlib import Path

HOST_ID = 100000  # the host uid and gid of the container's root
SIZE = 65536  # uids and gids 0..65535 of the container are mapped

# POSIX ACLs name users and groups: systemd-journald's package gives /var/log/journal
# "group:adm:r-x", which must become the shifted adm.  Their xattr is a version (2)
# followed by (tag u16, perm u16, id u32) entries; ACL_USER and ACL_GROUP carry an id.
_ACL_XATTRS = ("system.posix_acl_access", "system.posix_acl_default")
_ACL_HEADER, _ACL_ENTRY = struct.Struct("<I"), struct.Struct("<HHI")
_ACL_USER, _ACL_GROUP = 0x02, 0x08
# File capabilities name the root they belong to (revision 3); none of the images here
# has one, so shift_owners refuses such a file rather than guessing.
_REFUSED_XATTRS = ("security.capability",)


class UnshiftableTree(RuntimeError):
    pass


# (containerID, hostID, size) ranges of an id map, as in uidMappings.
IdMap = tuple[tuple[int, int, int], ...]
DEFAULT_IDS: IdMap = ((0, HOST_ID, SIZE),)


def host_id(id_map: IdMap, id_: int) -> int | None:
    """The host id of the container's ``id_`` under ``id_map``; None if it is not mapped."""
    for container, host, size in id_map:
        if container <= id_ < container + size:
            return host + id_ - container
    return None


def shift_owners(tree: Path, offset: int = HOST_ID, *, drop_file_capabilities: bool = False) -> int:
    """Add ``offset`` to the owner and group of every path in ``tree``: the tree of a
    container whose ids 0..SIZE-1 map to ``offset``.. (see map_owners)."""
    return map_owners(tree, ((0, offset, SIZE),), drop_file_capabilities=drop_file_capabilities)


def map_owners(tree: Path, id_map: IdMap, *, drop_file_capabilities: bool = False) -> int:
    """Give every path in ``tree`` (one file system, symlinks not followed) the host owner
    and group that its owner and group are under ``id_map``.  chown(2) clears the setuid
    and setgid bits of a file, so every mode is set back afterwards.  A hardlinked file
    is mapped once.  Returns the number of inodes changed.

    A file capability names the root it belongs to: such a file is refused, unless
    ``drop_file_capabilities`` (chown(2) drops the capability; a test that needs it
    sets it again, and the kernel stores it for the namespace's root)."""
    root_dev = os.lstat(tree).st_dev
    changed = 0
    seen: set[int] = set()

    def move(path: str) -> None:
        nonlocal changed
        st = os.lstat(path)
        if st.st_ino in seen:
            return  # another name of an inode already mapped
        seen.add(st.st_ino)
        uid, gid = host_id(id_map, st.st_uid), host_id(id_map, st.st_gid)
        if uid is None or gid is None:
            raise UnshiftableTree(f"{path}: owner {st.st_uid}:{st.st_gid} is outside the mapping {id_map}")
        names: set[str] = set()
        if not stat.S_ISLNK(st.st_mode):
            names = set(os.listxattr(path, follow_symlinks=False))
            refused = set() if drop_file_capabilities else names.intersection(_REFUSED_XATTRS)
            if refused:
                raise UnshiftableTree(f"{path}: {sorted(refused)} names a root uid; shifting it is not implemented")
        os.chown(path, uid, gid, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(path, stat.S_IMODE(st.st_mode))  # the setuid and setgid bits chown cleared
            for name in names.intersection(_ACL_XATTRS):
                os.setxattr(path, name, map_acl(os.getxattr(path, name), id_map, path))
        changed += 1

    move(str(tree))
    for dirpath, dirnames, filenames in os.walk(tree):
        # stay on the tree's file system, as cp -a and trees.manifest do
        dirnames[:] = [d for d in dirnames if os.lstat(os.path.join(dirpath, d)).st_dev == root_dev]
        for name in dirnames + filenames:
            move(os.path.join(dirpath, name))
    return changed


def map_acl(value: bytes, id_map: IdMap, where: str = "") -> bytes:
    """A POSIX ACL xattr with the id of every named user and group entry mapped by ``id_map``."""
    (version,) = _ACL_HEADER.unpack_from(value)
    body = value[_ACL_HEADER.size:]
    if version != 2 or len(body) % _ACL_ENTRY.size:
        raise UnshiftableTree(f"{where}: POSIX ACL of version {version}, {len(value)} bytes")
    out = [value[:_ACL_HEADER.size]]
    for tag, perm, id_ in _ACL_ENTRY.iter_unpack(body):
        if tag in (_ACL_USER, _ACL_GROUP):
            mapped = host_id(id_map, id_)
            if mapped is None:
                raise UnshiftableTree(f"{where}: ACL entry for id {id_} is outside the mapping {id_map}")
            id_ = mapped
        out.append(_ACL_ENTRY.pack(tag, perm, id_))
    return b"".join(out)


def map_users(bundle: Path, id_map: IdMap = DEFAULT_IDS) -> dict:
    """Give the bundle's config a user namespace with ``id_map`` for uids and gids; return it."""
    path = bundle / "config.json"
    cfg = json.loads(path.read_text())
    linux = cfg.setdefault("linux", {})
    namespaces = linux.setdefault("namespaces", [])
    if not any(ns.get("type") == "user" for ns in namespaces):
        namespaces.append({"type": "user"})
    mappings = [{"containerID": c, "hostID": h, "size": n} for c, h, n in id_map]
    linux["uidMappings"] = [dict(m) for m in mappings]
    linux["gidMappings"] = [dict(m) for m in mappings]
    path.write_text(json.dumps(cfg, indent=2) + "\n")
    return cfg


def uid_map_line() -> str:
    """/proc/self/uid_map (and gid_map) inside such a container, whitespace collapsed."""
    return f"0 {HOST_ID} {SIZE}"
