"""Bootstrap of an mpi4py function task: ``python -m hpcorch.mpi_run PAYLOAD``.

Every rank loads ``(fn, args, kwargs)`` from PAYLOAD and calls
``fn(MPI.COMM_WORLD, *args, **kwargs)``. Rank 0 writes ``(True, value)`` or
``(False, exception)`` to ``PAYLOAD.result`` (written whole, then renamed).
A rank other than 0 that raises aborts the whole communicator, so no rank
waits forever on a dead peer.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import cloudpickle  # type: ignore[import-untyped]


def _write(path: Path, ok: bool, value: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        try:
            cloudpickle.dump((ok, value), fh)
        except Exception as exc:  # an unpicklable result or exception
            fh.seek(0)
            fh.truncate()
            cloudpickle.dump((False, RuntimeError(f"rank 0 result not picklable: {exc!r}")), fh)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m hpcorch.mpi_run PAYLOAD\n")
        return 2
    payload = Path(args[0])
    from mpi4py import MPI  # noqa: PLC0415  # optional, only inside an MPI step

    comm = MPI.COMM_WORLD
    with payload.open("rb") as fh:
        fn, fn_args, fn_kwargs = cloudpickle.load(fh)
    try:
        value = fn(comm, *fn_args, **fn_kwargs)
    except BaseException as exc:
        if comm.Get_rank() == 0:
            _write(Path(f"{payload}.result"), False, exc)
            traceback.print_exc()
            if comm.Get_size() > 1:
                comm.Abort(1)
            return 1
        traceback.print_exc()
        comm.Abort(1)
        return 1
    if comm.Get_rank() == 0:
        _write(Path(f"{payload}.result"), True, value)
    return 0


if __name__ == "__main__":
    sys.exit(main())
