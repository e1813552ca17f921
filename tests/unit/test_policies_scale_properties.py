"""Property tests of the scaler over simulated sequences of queue states.

A small cluster model applies each plan: submitted allocations wait in the
queue for a while, then run; an allocation is busy while its pool has work,
idle otherwise; it ends at its walltime. Over any sequence the scaler must
respect MaxSubmitJobs and the partitions' sizes, never reverse direction within
the cool-down, and reach zero allocations once the work is done.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpcorch.policies.scale import PoolHistory, ScaleConfig, decide_scale, record
from hpcorch.policies.state import Allocation, PartitionLimits, PoolDemand, PoolShape, SiteLimits

GIB = 1024**3
QUEUE_WAIT_S = 15.0
POOLS = [
    PoolShape("cpu", "dev", "cpu"),
    PoolShape("mpi", "dev", "cpu", nodes_per_allocation=2),
    PoolShape("gpu", "dev", "gpu"),
]

Step = tuple[float, tuple[int, int, int], float]  # (dt, queued per pool, estimate)

steps = st.lists(
    st.tuples(
        st.sampled_from([1.0, 5.0, 10.0, 20.0, 45.0]),
        st.tuples(st.integers(0, 300), st.integers(0, 6), st.sampled_from([0, 0, 1, 4, 20])),
        st.sampled_from([5.0, 30.0, 300.0, 3000.0, 5000.0]),
    ),
    min_size=1,
    max_size=40,
)
configs = st.builds(
    ScaleConfig,
    idle_timeout_s=st.sampled_from([0.0, 30.0, 60.0, 300.0]),
    cooldown_s=st.sampled_from([0.0, 10.0, 30.0, 120.0]),
    hysteresis=st.sampled_from([0.0, 0.1, 0.5]),
    drain_target_s=st.sampled_from([30.0, 60.0, 600.0]),
)


@dataclass
class Cluster:
    limits: dict[str, SiteLimits]
    other_jobs: int
    config: ScaleConfig
    now: float = 0.0
    allocations: list[Allocation] = field(default_factory=list)
    history: dict[str, PoolHistory] = field(default_factory=dict)
    next_id: int = 0
    ups: dict[str, list[float]] = field(default_factory=dict)
    downs: dict[str, list[float]] = field(default_factory=dict)
    last_busy: float = 0.0

    def advance(self, dt: float, busy: dict[str, bool]) -> None:
        """Move the clock: start queued allocations, end expired ones, mark idle ones."""
        self.now += dt
        live = []
        for old in self.allocations:
            a = old
            if a.state == "pending" and self.now - a.submitted_at >= QUEUE_WAIT_S:
                start = a.submitted_at + QUEUE_WAIT_S
                a = replace(a, state="running", started_at=start, idle_since=start)
            if a.state == "running" and a.started_at is not None:
                if self.now >= a.started_at + a.walltime_s:
                    continue
                if busy.get(a.pool):
                    a = replace(a, idle_since=None)
                elif a.idle_since is None:
                    a = replace(a, idle_since=self.now)
            live.append(a)
        self.allocations = live
        if any(busy.values()):
            self.last_busy = self.now

    def step(self, demand: dict[str, PoolDemand]) -> None:
        plan = decide_scale(
            demand,
            self.allocations,
            POOLS,
            self.limits,
            history=self.history,
            now=self.now,
            other_jobs={"dev": self.other_jobs},
            config=self.config,
        )
        by_id = {a.id: a for a in self.allocations}
        for r in plan.releases:
            a = by_id[r.allocation]
            if r.surplus:  # released only after idle_timeout (pending: since submission)
                since = a.idle_since if a.state == "running" else a.submitted_at
                assert since is not None and self.now - since >= self.config.idle_timeout_s
            else:  # retired: idle and running
                assert a.state == "running" and a.idle_since is not None
        gone = {r.allocation for r in plan.releases}
        self.allocations = [a for a in self.allocations if a.id not in gone]
        for r in plan.releases:
            if r.surplus:
                self.downs.setdefault(r.pool, []).append(self.now)
        for s in plan.submits:
            assert s.count > 0 and s.walltime_s > 0
            self.ups.setdefault(s.pool, []).append(self.now)
            for _ in range(s.count):
                self.next_id += 1
                self.allocations.append(
                    Allocation(
                        str(self.next_id), s.pool, "pending", self.now, s.walltime_s, nodes=s.nodes
                    )
                )
        self.history = record(self.history, plan, self.now)
        self.check_limits()

    def check_limits(self) -> None:
        site = self.limits["dev"]
        if site.max_submit_jobs is not None:
            assert len(self.allocations) + self.other_jobs <= max(
                site.max_submit_jobs, self.other_jobs
            )
        for part in site.partitions:
            pools = {p.name for p in POOLS if p.partition == part.name}
            assert sum(a.nodes for a in self.allocations if a.pool in pools) <= part.nodes


def demand_of(queued: tuple[int, int, int], estimate: float) -> dict[str, PoolDemand]:
    shares = {"cpu": 0.125, "mpi": 4.0, "gpu": 0.25}
    out = {}
    for pool, n in zip(("cpu", "mpi", "gpu"), queued, strict=True):
        s = shares[pool]
        out[pool] = PoolDemand(
            pool,
            queued=n,
            queued_share=n * s,
            queued_node_s=n * s * estimate,
            shortest_s=estimate if n else 0.0,
            longest_s=estimate if n else 0.0,
            widest=s if n else 0.0,
        )
    return out


def cluster(
    max_submit: int | None, cpu_nodes: int, other_jobs: int, config: ScaleConfig
) -> Cluster:
    limits = SiteLimits(
        "dev",
        (
            PartitionLimits("cpu", cpu_nodes, 8, 8 * GIB, max_walltime_s=4 * 3600),
            PartitionLimits("gpu", 2, 8, 8 * GIB, gpus_per_node=4, max_walltime_s=3600),
        ),
        max_submit_jobs=max_submit,
    )
    return Cluster({"dev": limits}, other_jobs, config)


def run(c: Cluster, sequence: list[Step]) -> None:
    for dt, queued, estimate in sequence:
        demand = demand_of(queued, estimate)
        c.advance(dt, {p: d.queued > 0 for p, d in demand.items()})
        c.step(demand)


PROPERTY = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@PROPERTY
@given(
    sequence=steps,
    config=configs,
    max_submit=st.sampled_from([None, 1, 3, 8]),
    cpu_nodes=st.integers(1, 40),
    other_jobs=st.integers(0, 2),
)
def test_scaler_respects_limits_and_never_thrashes(
    sequence: list[Step],
    config: ScaleConfig,
    max_submit: int | None,
    cpu_nodes: int,
    other_jobs: int,
) -> None:
    c = cluster(max_submit, cpu_nodes, other_jobs, config)
    run(c, sequence)  # check_limits runs after every decision
    for pool in c.ups.keys() | c.downs.keys():
        for up in c.ups.get(pool, []):
            for down in c.downs.get(pool, []):
                assert abs(up - down) >= config.cooldown_s or config.cooldown_s == 0, (
                    f"pool {pool} scaled up at {up} and down at {down}"
                )


@PROPERTY
@given(sequence=steps, config=configs, cpu_nodes=st.integers(1, 40))
def test_scaler_reaches_zero_after_idle_timeout(
    sequence: list[Step], config: ScaleConfig, cpu_nodes: int
) -> None:
    c = cluster(8, cpu_nodes, 0, config)
    run(c, sequence)
    # the work is done: nothing queued from now on
    done = c.now
    interval = 5.0
    bound = QUEUE_WAIT_S + max(config.idle_timeout_s, config.cooldown_s) + interval
    while c.now <= done + bound:
        c.advance(interval, {})
        c.step(demand_of((0, 0, 0), 1.0))
    assert c.allocations == [], f"still {len(c.allocations)} allocations {bound}s after the work"


@PROPERTY
@given(
    queued=st.tuples(st.integers(1, 300), st.integers(0, 6), st.integers(0, 20)),
    estimate=st.sampled_from([30.0, 300.0, 3000.0, 5000.0]),
    config=configs,
)
def test_steady_demand_settles(
    queued: tuple[int, int, int], estimate: float, config: ScaleConfig
) -> None:
    """Under a constant queue the scaler stops acting once its allocations run."""
    c = cluster(None, 16, 0, config)
    demand = demand_of(queued, estimate)
    busy = {p: d.queued > 0 for p, d in demand.items()}
    for _ in range(10):
        c.advance(10.0, busy)
        c.step(demand)
    before = (sum(map(len, c.ups.values())), sum(map(len, c.downs.values())))
    for _ in range(10):
        c.advance(10.0, busy)
        c.step(demand)
    assert (sum(map(len, c.ups.values())), sum(map(len, c.downs.values()))) == before


def test_burst_scales_to_the_cluster_and_back_to_zero() -> None:
    """The issue's scenario: 200 short tasks on the dev cluster's 2 cpu nodes, polled every 5 s."""
    config = ScaleConfig(idle_timeout_s=60.0, cooldown_s=30.0)
    c = cluster(None, 2, 0, config)
    interval = 5.0
    peak = 0
    for queued in [200, 200, 180, 150, 120, 90, 60, 30, 10, 0]:
        demand = demand_of((queued, 0, 0), 10.0)
        c.advance(interval, {"cpu": queued > 0})
        c.step(demand)
        peak = max(peak, len(c.allocations))
    assert peak == 2  # what the partition holds
    ended = c.last_busy
    while c.allocations:
        c.advance(interval, {})
        c.step(demand_of((0, 0, 0), 1.0))
    assert c.now <= ended + config.idle_timeout_s + interval
    assert sum(map(len, c.ups.values())) == 1  # one scale-up, no thrash
