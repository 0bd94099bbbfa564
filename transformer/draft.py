"""The working copy of a config that records every change as an RFC 6902 op.

Like runtime-tools' Generator, concerns edit through small methods; unlike it, each
edit is also recorded, in order, with the concern and the reason, so the patch, the
review and the transformed config can never disagree. Missing parents are created by
their own `add` op, because RFC 6902 `add` fails when the parent does not exist.

The draft also records what the config alone cannot carry: the side files and host
directories the edge must create, and the tmpfs destinations that want the image's
content copied up (the tmpfs concern names them, the copy-up concern acts on them).
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from .pointer import pointer

NoteKind = Literal["kept", "info", "warning"]


class Op(NamedTuple):
    op: Literal["add", "replace"]
    tokens: tuple  # the op's path as tokens ('-' for an append)
    value: Any
    concern: str
    why: str
    # Where the value sits in the *final* config ('-' resolved, later inserts counted).
    at_tokens: list
    # True for an op that only creates a missing parent (an empty object or list).
    structural: bool = False

    # Pointers are built only when asked for: `apply` never needs them.
    @property
    def path(self) -> str:
        return pointer(self.tokens)

    @property
    def at(self) -> str:
        return pointer(self.at_tokens)

    def to_json(self) -> dict[str, Any]:
        # Op values are never mutated after creation, so they are shared, not copied.
        return {"op": self.op, "path": self.path, "value": self.value}


class Note(NamedTuple):
    kind: NoteKind
    concern: str
    message: str
    pointer: str | None = None


class SideFile(NamedTuple):
    """A file a bind mount of the plan needs. `path` is that mount's source: relative
    to the bundle directory (beside config.json), or absolute when Options.side_dir is."""

    path: str
    content: bytes
    mode: int = 0o444


class HostDirectory(NamedTuple):
    """A host directory a bind mount of the plan needs (--journal host), and the host
    uid and gid that must own it: the container's root, mapped or not."""

    path: str
    uid: int = 0
    gid: int = 0


class Plan(NamedTuple):
    systemd: bool
    ops: tuple[Op, ...]
    side_files: tuple[SideFile, ...]
    notes: tuple[Note, ...]
    facts: tuple[tuple[str, str], ...]
    config: dict[str, Any]
    # Host directories the plan's bind mounts need (--journal host): the core only
    # names them; the edge (apply, filter) creates them.
    host_directories: tuple[HostDirectory, ...]

    def patch(self) -> list[dict[str, Any]]:
        return [op.to_json() for op in self.ops]


def copy_json(value: Any) -> Any:
    """A deep copy of a JSON value; several times faster than copy.deepcopy, which
    keeps a memo for cycles and shared references that JSON cannot have."""
    kind = type(value)
    if kind is dict:
        return {k: copy_json(v) for k, v in value.items()}
    if kind is list:
        return [copy_json(v) for v in value]
    return value  # str, int, float, bool, None: immutable


class Draft:
    def __init__(self, config: dict[str, Any]):
        self.doc = copy_json(config)
        # Each op's at_tokens is a list that _shift keeps current while planning goes on.
        self._ops: list[Op] = []
        self._notes: list[tuple[Note, list | None]] = []
        self._side_files: list[SideFile] = []
        self._host_directories: list[HostDirectory] = []
        self._copy_up: list[str] = []

    @property
    def ops(self) -> tuple[Op, ...]:
        """The ops, each with `at` naming where its value sits in the final config."""
        return tuple(self._ops)

    @property
    def notes(self) -> tuple[Note, ...]:
        return tuple(
            note if at is None else note._replace(pointer=pointer(at)) for note, at in self._notes
        )

    @property
    def side_files(self) -> tuple[SideFile, ...]:
        return tuple(self._side_files)

    @property
    def host_directories(self) -> tuple[HostDirectory, ...]:
        return tuple(self._host_directories)

    @property
    def copy_up_destinations(self) -> tuple[str, ...]:
        return tuple(self._copy_up)

    def _shift(self, list_tokens: tuple, index: int) -> None:
        """An insertion at list_tokens[index] moves every later element one down; keep
        the recorded locations of earlier ops and notes pointing at the same values."""
        n = len(list_tokens)
        for at in [op.at_tokens for op in self._ops] + [at for _, at in self._notes if at is not None]:
            if len(at) > n and tuple(at[:n]) == list_tokens and isinstance(at[n], int) and at[n] >= index:
                at[n] += 1

    def get(self, *tokens: str | int, default: Any = None) -> Any:
        node: Any = self.doc
        for token in tokens:
            if isinstance(node, dict) and isinstance(token, str) and token in node:
                node = node[token]
            elif isinstance(node, list) and isinstance(token, int) and 0 <= token < len(node):
                node = node[token]
            else:
                return default
        return node

    def _parent(self, tokens: tuple) -> Any:
        node = self.doc
        for token in tokens[:-1]:
            node = node[token]
        return node

    def add(self, tokens: tuple, value: Any, concern: str, why: str, structural: bool = False) -> None:
        parent, key = self._parent(tokens), tokens[-1]
        value = copy_json(value)
        if isinstance(parent, list):
            index = len(parent) if key == "-" or key == len(parent) else key
            if index < len(parent):  # an append moves nothing
                self._shift(tokens[:-1], index)
            parent.insert(index, copy_json(value))
            path = tokens[:-1] + ("-" if index == len(parent) - 1 else index,)
            at = list(tokens[:-1]) + [index]
        else:
            parent[key] = copy_json(value)
            path, at = tokens, list(tokens)
        self._ops.append(Op("add", path, value, concern, why, at, structural))

    def replace(self, tokens: tuple, value: Any, concern: str, why: str) -> None:
        parent, key = self._parent(tokens), tokens[-1]
        parent[key] = copy_json(value)
        self._ops.append(Op("replace", tuple(tokens), copy_json(value), concern, why, list(tokens)))

    def ensure_object(self, tokens: tuple, concern: str, why: str) -> None:
        """Create each missing object along tokens with its own add op."""
        for depth in range(1, len(tokens) + 1):
            if self.get(*tokens[:depth]) is None:
                self.add(tokens[:depth], {}, concern, why, structural=True)

    def ensure_list(self, tokens: tuple, concern: str, why: str) -> None:
        self.ensure_object(tokens[:-1], concern, why)
        if self.get(*tokens) is None:
            self.add(tokens, [], concern, why, structural=True)

    def note(self, kind: NoteKind, concern: str, message: str, at: tuple | None = None) -> None:
        self._notes.append((Note(kind, concern, message), list(at) if at is not None else None))

    def side_file(self, path: str, content: bytes, mode: int = 0o444) -> None:
        """Record a file that a bind mount of this draft names as its source."""
        self._side_files.append(SideFile(path, content, mode))

    def host_directory(self, path: str, uid: int = 0, gid: int = 0) -> None:
        """Record a host directory that a bind mount of this draft needs, and its owner."""
        self._host_directories.append(HostDirectory(path, uid, gid))

    def want_copy_up(self, destination: str) -> None:
        """Record a tmpfs destination added by this draft that wants the image's content."""
        self._copy_up.append(destination)

    def plan(self, systemd: bool, facts: list[tuple[str, str]]) -> Plan:
        """The plan of this draft as it stands."""
        return Plan(systemd, self.ops, self.side_files, self.notes, tuple(facts), self.doc, self.host_directories)
