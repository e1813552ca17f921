"""AMD GPUs beside NVIDIA ones: topology from amd-smi / rocm-smi, binding through
ROCR_VISIBLE_DEVICES / HIP_VISIBLE_DEVICES, CuPy's ROCm build, and the same placement
rules (linked pairs, socket affinity) for both vendors.

The tool outputs follow the formats the tools print: rocm-smi's from ROCm's own
rocm-smi-lib CHANGELOG and issue ROCm/rocm_smi_lib#108 (a 4-GPU PCIe node, verbatim
values), amd-smi's from ROCm/rocm-systems#5763 (an MI250X node like Frontier's: every
GCD pair XGMI, weight 15; ``SELF`` on the diagonal). The 8-GCD rocm-smi table is that
layout with the in-package pairs closer (weight 15) than the others (30).
"""

from __future__ import annotations

import sys
import types

import pytest

from hpcorch import gpu, topology
from hpcorch.gpu_env import apply_gpu_env, env_vendor, gpu_env, vendor_of, visible_gpus
from hpcorch.mpi_bind import rank_gpus
from hpcorch.placement import Request, Slot
from hpcorch.placement.plugin import SlotPlugin, slot_env
from hpcorch.placement.slots import SlotAllocator
from hpcorch.sites.model import NodeShape
from hpcorch.topology import (
    GpuInfo,
    NodeTopology,
    merge_smi,
    parse_amd_smi_topology,
    parse_rocm_smi_topo,
)

ROCM_SMI_PCIE = """\
======================= ROCm System Management Interface =======================
=========================== Weight between two GPUs ============================
       GPU0         GPU1         GPU2         GPU3
GPU0   0            52           52           52
GPU1   52           0            52           52
GPU2   52           52           0            52
GPU3   52           52           52           0

============================ Hops between two GPUs =============================
       GPU0         GPU1         GPU2         GPU3
GPU0   0            3            3            3
GPU1   3            0            3            3
GPU2   3            3            0            3
GPU3   3            3            3            0

========================== Link Type between two GPUs ==========================
       GPU0         GPU1         GPU2         GPU3
GPU0   0            PCIE         PCIE         PCIE
GPU1   PCIE         0            PCIE         PCIE
GPU2   PCIE         PCIE         0            PCIE
GPU3   PCIE         PCIE         PCIE         0

================================== Numa Nodes ==================================
GPU[0]\t\t: (Topology) Numa Node: 0
GPU[0]\t\t: (Topology) Numa Affinity: 0
GPU[1]\t\t: (Topology) Numa Node: 0
GPU[1]\t\t: (Topology) Numa Affinity: 0
GPU[2]\t\t: (Topology) Numa Node: 1
GPU[2]\t\t: (Topology) Numa Affinity: 1
GPU[3]\t\t: (Topology) Numa Node: 1
GPU[3]\t\t: (Topology) Numa Affinity: 1
============================= End of ROCm SMI Log ==============================
"""


def _rocm_smi_mi250x() -> str:
    """8 GCDs: XGMI everywhere, weight 15 inside an MI250X (0-1, 2-3, ...), 30 across;
    NUMA nodes as on Frontier's diagram (GCD 4,5 on 0; 2,3 on 1; 6,7 on 2; 0,1 on 3)."""
    head = "       " + "".join(f"GPU{j:<10}" for j in range(8))
    weight = [head] + [
        f"GPU{i}   " + "".join(f"{0 if i == j else (15 if i // 2 == j // 2 else 30):<13}"
                          for j in range(8))
        for i in range(8)
    ]  # fmt: skip
    link = [head] + [
        f"GPU{i}   " + "".join(f"{'0' if i == j else 'XGMI':<13}" for j in range(8))
        for i in range(8)
    ]
    numa = {0: 3, 1: 3, 2: 1, 3: 1, 4: 0, 5: 0, 6: 2, 7: 2}

    def rule(title: str) -> str:
        return f" {title} ".center(90, "=")

    lines = [
        rule("ROCm System Management Interface"),
        rule("Weight between two GPUs"),
        *weight,
        "",
        rule("Link Type between two GPUs"),
        *link,
        "",
        rule("Numa Nodes"),
    ]
    for i in range(8):
        lines.append(f"GPU[{i}]          : (Topology) Numa Node: {numa[i]}")
        lines.append(f"GPU[{i}]          : (Topology) Numa Affinity: {numa[i]}")
    lines.append(
        "================================== End of ROCm SMI Log ==================================="
    )
    return "\n".join(lines) + "\n"


BDFS = [f"0000:{b}:00.0" for b in ("c1", "c6", "c9", "ce", "d1", "d6", "d9", "de")]


def _amd_smi_table(title: str, cell: object) -> list[str]:
    rows = [f"{title}:", " " * 13 + " ".join(f"{b:<12}" for b in BDFS)]
    for i, b in enumerate(BDFS):
        rows.append(f"{b} " + " ".join(f"{cell(i, j)!s:<12}" for j in range(8)))  # type: ignore[operator]
    return [*rows, ""]


AMD_SMI_FRONTIER = "\n".join(
    _amd_smi_table("ACCESS TABLE", lambda i, j: "ENABLED")
    + _amd_smi_table("WEIGHT TABLE", lambda i, j: 0 if i == j else 15)
    + _amd_smi_table("HOPS TABLE", lambda i, j: 0 if i == j else 1)
    + _amd_smi_table("LINK TYPE TABLE", lambda i, j: "SELF" if i == j else "XGMI")
    + _amd_smi_table("NUMA BW TABLE", lambda i, j: "N/A" if i == j else "50000-200000")
)

FRONTIER_LIKE = NodeTopology(
    sockets=8,
    cores_per_socket=2,
    memory=16 * 1024**3,
    gpus=tuple(GpuInfo(i, s, "mi250x") for i, s in enumerate((6, 7, 2, 3, 0, 1, 4, 5))),
    nvlinks=frozenset({(0, 1), (2, 3), (4, 5), (6, 7)}),
)


# ---------------------------------------------------------------- topology


def test_rocm_smi_pcie_node_has_no_links_and_numa_per_gpu() -> None:
    smi = parse_rocm_smi_topo(ROCM_SMI_PCIE)
    assert smi.nvlinks == frozenset()
    assert smi.numa == (0, 0, 1, 1)
    assert smi.cpus == ((), (), (), ())
    node = NodeTopology(2, 4, 1024**3, tuple(GpuInfo(i, None, "mi100") for i in range(4)))
    merged = merge_smi(node, smi)
    assert [g.socket for g in merged.gpus] == [0, 0, 1, 1]


def test_rocm_smi_xgmi_pairs_are_the_closest_links() -> None:
    smi = parse_rocm_smi_topo(_rocm_smi_mi250x())
    assert smi.nvlinks == frozenset({(0, 1), (2, 3), (4, 5), (6, 7)})
    assert smi.numa == (3, 3, 1, 1, 0, 0, 2, 2)
    # 4 NUMA nodes on a node Slurm shows as 4 sockets: NUMA node = socket.
    node = NodeTopology(4, 2, 1024**3, tuple(GpuInfo(i, None, "mi250x") for i in range(8)))
    assert [g.socket for g in merge_smi(node, smi).gpus] == [3, 3, 1, 1, 0, 0, 2, 2]
    # Not as many NUMA nodes as sockets: the sockets stay as they were.
    one = NodeTopology(1, 8, 1024**3, tuple(GpuInfo(i, 0, "mi250x") for i in range(8)))
    merged = merge_smi(one, smi)
    assert {g.socket for g in merged.gpus} == {0}
    assert merged.linked(0, 1) and not merged.linked(1, 2)


def test_amd_smi_topology_by_pci_address() -> None:
    smi = parse_amd_smi_topology(AMD_SMI_FRONTIER)
    assert len(smi.cpus) == 8 and smi.numa == (None,) * 8
    # Every pair XGMI at weight 15: all linked, as Frontier's tools report.
    assert smi.nvlinks == frozenset((i, j) for i in range(8) for j in range(i + 1, 8))


def test_amd_smi_without_gpus_or_tables() -> None:
    assert parse_amd_smi_topology("").nvlinks == frozenset()
    assert parse_rocm_smi_topo("ERROR: No AMD GPUs found\n").cpus == ()


def test_detect_topology_uses_amd_smi_when_there_is_no_nvidia_smi(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scontrol = (
        "NodeName=gpu1 Sockets=8 CoresPerSocket=2 RealMemory=16000 Gres=gpu:mi250x:8(S:0-7)\n"
    )
    outputs = {"scontrol": scontrol, "amd-smi": AMD_SMI_FRONTIER}
    monkeypatch.setattr(topology, "_run", lambda argv, timeout=10.0: outputs.get(argv[0]))
    found = topology.detect_topology("gpu1")
    assert found is not None and found.gpu_count == 8 and found.linked(0, 7)


# ---------------------------------------------------------------- vendor and variables


def test_vendor_from_site_or_gpu_type() -> None:
    assert vendor_of("mi250x") == "amd"
    assert vendor_of("MI300A") == "amd"
    assert vendor_of("gfx90a") == "amd"
    assert vendor_of("a100") == "nvidia"
    assert vendor_of(None) == "nvidia"
    assert vendor_of("sim", "amd") == "amd"
    assert env_vendor({"ROCR_VISIBLE_DEVICES": "0"}) == "amd"
    assert env_vendor({"CUDA_VISIBLE_DEVICES": "0"}) == "nvidia"
    assert env_vendor({}) is None
    # Slurm without Flags=*_gpu_env sets every vendor's variable (the dev cluster's stand-ins)
    assert env_vendor({"CUDA_VISIBLE_DEVICES": "0", "ROCR_VISIBLE_DEVICES": "0"}) is None


def test_variables_per_vendor() -> None:
    assert gpu_env(["4", "5"], "amd") == {
        "ROCR_VISIBLE_DEVICES": "4,5",
        "HIP_VISIBLE_DEVICES": "0,1",
        "CUDA_VISIBLE_DEVICES": None,
    }
    assert gpu_env(["1"], "nvidia") == {
        "CUDA_VISIBLE_DEVICES": "1",
        "ROCR_VISIBLE_DEVICES": None,
        "HIP_VISIBLE_DEVICES": None,
    }
    env = {"CUDA_VISIBLE_DEVICES": "0,1", "PATH": "/bin"}
    apply_gpu_env(env, [], "amd")
    assert env == {"ROCR_VISIBLE_DEVICES": "", "HIP_VISIBLE_DEVICES": "", "PATH": "/bin"}
    assert visible_gpus({"ROCR_VISIBLE_DEVICES": "2,4,5"}) == ("2", "4", "5")
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "1"}) == ("1",)
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "1"}, "amd") is None
    assert visible_gpus({}) is None


def test_slot_env_on_amd_and_nvidia() -> None:
    slot = Slot(node="gpu1", cores=(0, 1), gpus=(4, 5))
    amd = slot_env(slot, {"ROCR_VISIBLE_DEVICES": "2,4,5"})
    assert amd["ROCR_VISIBLE_DEVICES"] == "4,5" and amd["HIP_VISIBLE_DEVICES"] == "0,1"
    assert "CUDA_VISIBLE_DEVICES" not in amd
    nvidia = slot_env(slot, {"CUDA_VISIBLE_DEVICES": "2,4,5"})
    assert nvidia["CUDA_VISIBLE_DEVICES"] == "4,5"
    assert "ROCR_VISIBLE_DEVICES" not in nvidia and "HIP_VISIBLE_DEVICES" not in nvidia
    forced = slot_env(slot, {}, vendor="amd")
    assert forced["ROCR_VISIBLE_DEVICES"] == "4,5"
    cpu_only = slot_env(Slot(node="gpu1", cores=(0,), gpus=()), {"ROCR_VISIBLE_DEVICES": "2"})
    assert cpu_only["ROCR_VISIBLE_DEVICES"] == ""


def test_plugin_takes_the_gpus_slurm_gave_through_rocr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("ROCR_VISIBLE_DEVICES", "2,4,5")
    plugin = SlotPlugin(FRONTIER_LIKE, node="gpu1")
    plugin.setup(worker=None)
    assert plugin.vendor == "amd" and plugin.allocator is not None
    assert [i for i, f in enumerate(plugin.allocator.state.gpu_free) if f] == [2, 4, 5]
    # Without Slurm's variable, the GPU type says AMD.
    monkeypatch.delenv("ROCR_VISIBLE_DEVICES")
    plain = SlotPlugin(FRONTIER_LIKE, node="gpu1")
    plain.setup(worker=None)
    assert plain.vendor == "amd"


def test_mpi_ranks_split_the_step_gpus_on_amd() -> None:
    env = {"ROCR_VISIBLE_DEVICES": "0,1,2,3", "SLURM_LOCALID": "1"}
    assert rank_gpus(env, 2) == "2,3"
    assert rank_gpus({"ROCR_VISIBLE_DEVICES": "6,7"}, 2) is None


# ---------------------------------------------------------------- placement rules


@pytest.mark.parametrize("gpu_type", ["mi250x", "a100"])
def test_pairs_and_sockets_rule_both_vendors(gpu_type: str) -> None:
    topology = NodeTopology(
        sockets=8,
        cores_per_socket=2,
        memory=16 * 1024**3,
        gpus=tuple(GpuInfo(g.index, g.socket, gpu_type) for g in FRONTIER_LIKE.gpus),
        nvlinks=FRONTIER_LIKE.nvlinks,
    )
    alloc = SlotAllocator("gpu1", topology)
    pairs = [alloc.try_allocate(Request(cpus=2, gpus=2)) for _ in range(4)]
    for slot in pairs:
        assert slot is not None and topology.linked(*slot.gpus), slot
    alloc = SlotAllocator("gpu1", topology)
    one = alloc.try_allocate(Request(cpus=2, gpus=1))
    assert one is not None
    # The cores come from the GPU's own socket (its L3 region on Frontier).
    assert {topology.socket_of_core(c) for c in one.cores} == {topology.gpu_socket(one.gpus[0])}


def test_site_node_shape_declares_the_vendor() -> None:
    shape = NodeShape(sockets=1, cores_per_socket=8, memory=1024**3, gpus=2, gpu_type="x",
                      gpu_vendor="amd")  # fmt: skip
    assert vendor_of(shape.gpu_type, shape.gpu_vendor) == "amd"
    with pytest.raises(ValueError, match="gpu_vendor"):
        NodeShape(sockets=1, memory=1024**3, gpus=1, gpu_vendor="intel")  # type: ignore[arg-type]


# ---------------------------------------------------------------- CuPy's ROCm build


@pytest.fixture
def _fresh_probe() -> object:
    gpu.gpu_count(refresh=True)
    yield
    gpu.gpu_count(refresh=True)


def test_cupy_rocm_build_is_used_where_installed(
    monkeypatch: pytest.MonkeyPatch, _fresh_probe: object
) -> None:
    runtime = types.SimpleNamespace(is_hip=True, getDeviceCount=lambda: 2)
    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(runtime=runtime)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.delenv("HPCORCH_NO_GPU", raising=False)
    for var in ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ROCR_VISIBLE_DEVICES", "4,5")
    assert gpu.gpu_count(refresh=True) == 2
    assert gpu.gpu_backend() == "rocm"
    assert gpu.xp() is fake
    monkeypatch.setenv("ROCR_VISIBLE_DEVICES", "")
    assert gpu.gpu_count(refresh=True) == 0 and gpu.gpu_backend() is None
