"""scripts/dev-cluster's port-block registry: blocks of clusters long gone are taken back."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "dev-cluster"


def load() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("dev_cluster", str(SCRIPT))
    spec = importlib.util.spec_from_loader("dev_cluster", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["dev_cluster"] = module  # its dataclasses look their module up
    loader.exec_module(module)
    return module


def cluster_root(tmp_path: Path, name: str, pids: dict[str, object] | None, age_s: float) -> Path:
    root = tmp_path / name
    (root / "run").mkdir(parents=True)
    if pids is not None:
        (root / "run" / "pids.json").write_text(json.dumps(pids))
    then = time.time() - age_s
    os.utime(root, (then, then))
    return root


def test_free_block_is_the_lowest_and_zero_only_for_dev() -> None:
    dc = load()
    assert dc.free_port_block({}, True) == 0
    assert dc.free_port_block({}, False) == 1
    assert dc.free_port_block({"a": 0, "b": 1, "c": 3}, True) == 2
    full = {str(i): i for i in range(dc.PORT_BLOCKS)}
    assert dc.free_port_block(full, False) is None
    # the last block's ports stay below the ephemeral range
    assert 17000 + 100 * (dc.PORT_BLOCKS - 1) + 99 < 32768


def test_only_idle_clusters_that_run_nothing_are_stale(tmp_path: Path) -> None:
    dc = load()
    me = {"pid": os.getpid(), "start": dc.proc_start_time(os.getpid())}
    assert dc.stale_cluster_root(tmp_path / "gone")  # its checkout was deleted
    assert dc.stale_cluster_root(cluster_root(tmp_path, "down", {}, age_s=3600))
    assert dc.stale_cluster_root(cluster_root(tmp_path, "never-up", None, age_s=3600))
    # a cluster whose daemons run keeps its block however old
    assert not dc.stale_cluster_root(cluster_root(tmp_path, "up", {"slurmctld": me}, 3600))
    # one used a moment ago (being brought up again) keeps it too
    assert not dc.stale_cluster_root(cluster_root(tmp_path, "fresh", {}, age_s=5))
