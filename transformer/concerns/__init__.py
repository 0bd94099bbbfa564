"""One module per concern, each the engine for its policy documents in patches/.

Every concern module has the same shape, beside its code:
  its policy's types and a parser of each of its documents (given a policy.Reader);
  DOCUMENTS, its document names (patches/<name>.json, also the concern named in the
  ops and notes it makes) mapped to those parsers;
  contribute(draft, ctx) -> None, which records its edits, side files, host
  directories and copy-up wishes in the draft.
detection has the documents and no contribute: it runs first, and decides whether
the others run at all.

CONCERNS lives here rather than in plan.py because policy.py reads the same list to
know which documents to load, and policy.py must not import the planner.
"""

# No `from __future__ import annotations` here: it would bind the name `annotations`
# in this package, and `from . import annotations` would then not load the concern.
from typing import Any, Callable

from . import (annotations, capabilities, cgroups, copy_up, detection, environment, journal, machine_id, run_host,
               tmpfs)

# The order plan() runs them in, which is the order of the ops in every patch. The
# later ones build on the earlier: the machine-id mask and the seccomp generator go
# into the /run tmpfs, the host journal inside the /var/log/journal tmpfs, /run/host
# repeats the environment that machine-id and environment settled, and copy-up fills
# the tmpfs mounts that were added.
CONCERNS = (tmpfs, cgroups, machine_id, journal, capabilities, environment, run_host, annotations, copy_up)

# Every policy document, name -> parser, in the order they are read.
PARSERS: dict[str, Callable[[Any], Any]] = {
    name: parse for module in (detection, *CONCERNS) for name, parse in module.DOCUMENTS.items()
}
