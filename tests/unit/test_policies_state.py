"""Policy state built from the validated site model (hpcorch.policies.state)."""

from __future__ import annotations

import dataclasses

import pytest

from hpcorch.policies.state import (
    Allocation,
    ChargeRates,
    PartitionLimits,
    SiteLimits,
    charge_rates,
    site_limits,
)
from hpcorch.sites.model import Charge, Limits, NodeShape, Partition, Qos, Site

GIB = 1024**3

SITE = Site(
    name="hpc",
    kind="local",
    partitions=(
        Partition(
            name="cpu",
            nodes=10,
            node=NodeShape(sockets=2, cores_per_socket=4, memory=8 * GIB),
            max_walltime_s=48 * 3600,
            default=True,
        ),
        Partition(
            name="gpu",
            nodes=2,
            node=NodeShape(sockets=2, cores_per_socket=8, memory=64 * GIB, gpus=4),
            max_walltime_s=6 * 3600,
            max_nodes_per_job=2,
            charge=Charge(su_per_node_hour=4.0, su_per_gpu_hour=1.0),
        ),
    ),
    limits=Limits(max_walltime_s=24 * 3600, max_submit_jobs=50, max_nodes_per_job=8),
    qos=(
        Qos(name="normal", default=True),
        Qos(name="short", max_walltime_s=3600, max_submit_jobs=5, charge_factor=2.0),
    ),
    charge=Charge(su_per_node_hour=1.0, price_per_su=0.1, currency="USD"),
)


def test_site_limits_take_the_tightest_of_partition_site_and_qos() -> None:
    limits = site_limits(SITE)
    cpu = limits.partition("cpu")
    assert cpu == PartitionLimits("cpu", 10, 8, 8 * GIB, 0, 24 * 3600, 8)
    assert limits.partition("gpu") == PartitionLimits("gpu", 2, 16, 64 * GIB, 4, 6 * 3600, 2)
    assert limits.max_submit_jobs == 50
    short = site_limits(SITE, "short")
    assert short.max_submit_jobs == 5
    assert {p.max_walltime_s for p in short.partitions} == {3600}


def test_site_limits_partition_lookup() -> None:
    limits = site_limits(SITE)
    assert limits.partition("nope") is None
    assert limits.partition(None).name == "gpu"  # the largest nodes
    assert SiteLimits("empty", ()).partition(None) is None
    with pytest.raises(KeyError, match="short"):
        site_limits(SITE, "long")


def test_charge_rates_from_partition_site_and_qos() -> None:
    assert charge_rates(SITE) == ChargeRates(1.0, 0.0, 0.1, "USD", 1.0)
    assert charge_rates(SITE, "gpu") == ChargeRates(4.0, 1.0, None, None, 1.0)
    assert charge_rates(SITE, "cpu", "short").charge_factor == 2.0


def test_allocation_remaining() -> None:
    pending = Allocation("1", "p", "pending", submitted_at=0.0, walltime_s=600.0)
    running = dataclasses.replace(pending, state="running", started_at=100.0)
    assert pending.remaining_s(10_000.0) == 600.0
    assert running.remaining_s(400.0) == 300.0
    assert running.remaining_s(10_000.0) == 0.0


def test_state_is_frozen_and_slotted() -> None:
    allocation = Allocation("1", "p", "pending", submitted_at=0.0, walltime_s=600.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        allocation.walltime_s = 1.0  # type: ignore[misc]
    assert not hasattr(allocation, "__dict__")
