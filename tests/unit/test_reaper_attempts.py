"""``end_attempts``: the commands of the attempts named end; the others run on."""

from __future__ import annotations

import subprocess
import threading

from hpcorch.provision.reaper import end_attempts, tracked


def test_end_attempts_ends_only_the_attempts_named() -> None:
    procs = {
        attempt: subprocess.Popen(["sleep", "30"], start_new_session=True)
        for attempt in (("a", 1), ("a", 2), ("b", 1))
    }
    entered = threading.Barrier(len(procs) + 1)
    release = threading.Event()

    def hold(proc: subprocess.Popen[bytes], attempt: tuple[str, int]) -> None:
        with tracked(proc, "run", attempt):
            entered.wait()
            release.wait(30)

    threads = [threading.Thread(target=hold, args=(p, a)) for a, p in procs.items()]
    for t in threads:
        t.start()
    try:
        entered.wait()
        assert end_attempts("other-run", [("a", 1)]) == 0
        assert end_attempts("run", [("a", 1), ("c", 1)]) == 1
        assert procs[("a", 1)].wait(10) is not None
        assert procs[("a", 2)].poll() is None and procs[("b", 1)].poll() is None
    finally:
        release.set()
        for t in threads:
            t.join()
    for p in procs.values():  # tracked() kills what is left of each group at its end
        p.wait(10)
