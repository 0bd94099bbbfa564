"""Boot the cells of a test module at once, and report each cell as its own test.

pytest runs tests one after the other, but a container spends most of its boot waiting
(on systemd's jobs, on services, on the disk), so booting several at once costs little
more than booting one.  A module-scoped fixture makes a ``CellPool`` of the cells that
this session selected (``-k`` applies), which starts them all at once in a thread pool;
each parametrized test then waits for its own cell and re-raises what that cell raised
(an AssertionError with its traceback, or a skip).

    @pytest.fixture(scope="module")
    def pool(request):
        with parallel.CellPool(run_cell, parallel.selected_params(request, "cell"), workers=3) as p:
            yield p

    @pytest.mark.parametrize("cell", CELLS, ids=str)
    def test_cell(pool, cell):
        pool.result(cell)

Every cell cleans up after itself (its containers are context managers); leaving the
block waits for every cell, so nothing runs past the module.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Hashable, Iterable


def selected_params(request, argname: str) -> list:
    """The values of parameter ``argname`` of the tests of ``request``'s module that this
    session will run (after -k and -m deselection), in their order, once each."""
    seen: list = []
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        if item.module is request.module and callspec is not None and argname in callspec.params:
            value = callspec.params[argname]
            if value not in seen:
                seen.append(value)
    return seen


class CellPool:
    def __init__(self, run: Callable[[Any], Any], cells: Iterable[Hashable], *, workers: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cell")
        self._futures: dict[Hashable, Future] = {cell: self._executor.submit(run, cell) for cell in cells}

    def result(self, cell: Hashable) -> Any:
        """What ``run(cell)`` returned; re-raises what it raised."""
        if cell not in self._futures:
            raise KeyError(f"{cell} was not selected when the pool was made")
        return self._futures[cell].result()

    def __enter__(self) -> "CellPool":
        return self

    def __exit__(self, *exc) -> None:
        self._executor.shutdown(wait=True)
