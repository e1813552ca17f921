from __future__ import annotations

import pytest

from hpcorch.sites.model import NodeShape
from hpcorch.topology import (
    GpuInfo,
    NodeTopology,
    merge_gres,
    merge_smi,
    parse_gres_conf,
    parse_index_list,
    parse_nvidia_smi_topo,
    parse_scontrol_nodes,
)

SCONTROL = """\
NodeName=gpu1 Arch=x86_64 CoresPerSocket=4
   CPUAlloc=0 CPUEfctv=8 CPUTot=8 CPULoad=0.10
   AvailableFeatures=(null)
   Gres=gpu:sim:4(S:0-1)
   GresDrain=N/A
   GresUsed=gpu:sim:0(IDX:N/A)
   NodeAddr=127.0.0.1 NodeHostName=host Version=22.05.8
   RealMemory=8000 AllocMem=0 FreeMem=1000 Sockets=2 Boards=1
   State=IDLE ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A

NodeName=cpu1 Arch=x86_64 CoresPerSocket=4
   Gres=(null)
   RealMemory=8000 AllocMem=0 FreeMem=1000 Sockets=2 Boards=1
"""

GRES_CONF = """\
# dev cluster: 4 stand-in GPUs per node, NVLink pairs 0-1 and 2-3
NodeName=gpu[1-2] Name=gpu Type=sim File=/dev/nvidia0 Cores=0-3 Links=-1,2,0,0
NodeName=gpu[1-2] Name=gpu Type=sim File=/dev/nvidia1 Cores=0-3 Links=2,-1,0,0
NodeName=gpu[1-2] Name=gpu Type=sim File=/dev/nvidia2 Cores=4-7 Links=0,0,-1,2
NodeName=gpu[1-2] Name=gpu Type=sim File=/dev/nvidia3 Cores=4-7 Links=0,0,2,-1
"""

SMI = """\
\tGPU0\tGPU1\tGPU2\tGPU3\tNIC0\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID
GPU0\t X \tNV12\tSYS\tSYS\tPXB\t0-7\t0\t\tN/A
GPU1\tNV12\t X \tSYS\tSYS\tPXB\t0-7\t0\t\tN/A
GPU2\tSYS\tSYS\t X \tNV12\tSYS\t8-15\t1\t\tN/A
GPU3\tSYS\tSYS\tNV12\t X \tSYS\t8-15\t1\t\tN/A
NIC0\tPXB\tPXB\tSYS\tSYS\t X \t\t\t\t

Legend:

  X    = Self
  NV#  = Connection traversing a bonded set of # NVLinks
"""


def test_index_list() -> None:
    assert parse_index_list("0-3,8,10-11") == (0, 1, 2, 3, 8, 10, 11)
    assert parse_index_list("5") == (5,)
    with pytest.raises(ValueError, match="index list"):
        parse_index_list("a-b")


def test_from_shape_spreads_unknown_gpu_sockets_and_round_trips() -> None:
    shape = NodeShape(sockets=2, cores_per_socket=4, memory=8 << 30, gpus=4, nvlinks=((1, 0),))
    topo = NodeTopology.from_shape(shape)
    assert [g.socket for g in topo.gpus] == [0, 0, 1, 1]
    assert topo.linked(0, 1) and topo.linked(1, 0) and not topo.linked(0, 2)
    assert topo.cores == 8
    assert list(topo.socket_cores(1)) == [4, 5, 6, 7]
    assert topo.to_shape().gpu_sockets == (0, 0, 1, 1)
    assert topo.to_shape().nvlinks == ((0, 1),)


def test_topology_rejects_bad_links_and_sockets() -> None:
    with pytest.raises(ValueError, match="NVLink"):
        NodeTopology(1, 2, 1, (GpuInfo(0, 0),), frozenset({(0, 3)}))
    with pytest.raises(ValueError, match="socket"):
        NodeTopology(1, 2, 1, (GpuInfo(0, 2),))


def test_parse_scontrol_nodes() -> None:
    nodes = parse_scontrol_nodes(SCONTROL)
    gpu1 = nodes["gpu1"]
    assert (gpu1.sockets, gpu1.cores_per_socket, gpu1.memory) == (2, 4, 8000 * 1024**2)
    assert [g.socket for g in gpu1.gpus] == [0, 0, 1, 1]
    assert {g.type for g in gpu1.gpus} == {"sim"}
    assert nodes["cpu1"].gpus == ()


def test_parse_scontrol_per_socket_gres() -> None:
    text = (
        "NodeName=n1 Sockets=2 CoresPerSocket=2 RealMemory=10\n"
        "   Gres=gpu:a100:1(S:1),gpu:a100:1(S:0)\n"
    )
    assert [g.socket for g in parse_scontrol_nodes(text)["n1"].gpus] == [1, 0]


def test_parse_gres_conf_and_merge() -> None:
    gres = parse_gres_conf(GRES_CONF, node="gpu2")
    assert [g.file for g in gres] == [f"/dev/nvidia{i}" for i in range(4)]
    assert gres[2].cores == (4, 5, 6, 7)
    assert parse_gres_conf(GRES_CONF, node="cpu1") == []
    base = NodeTopology(2, 4, 1, tuple(GpuInfo(i) for i in range(4)))
    merged = merge_gres(base, gres)
    assert [g.socket for g in merged.gpus] == [0, 0, 1, 1]
    assert merged.nvlinks == {(0, 1), (2, 3)}


def test_gres_conf_file_range() -> None:
    gres = parse_gres_conf("Name=gpu File=/dev/nvidia[0-1] Cores=0-1\nName=mps Count=100\n")
    assert [g.file for g in gres] == ["/dev/nvidia0", "/dev/nvidia1"]


def test_parse_nvidia_smi_topo_and_merge() -> None:
    smi = parse_nvidia_smi_topo(SMI)
    assert smi.nvlinks == {(0, 1), (2, 3)}
    assert smi.cpus[2] == tuple(range(8, 16))
    assert smi.numa == (0, 0, 1, 1)
    base = NodeTopology(2, 8, 1, tuple(GpuInfo(i) for i in range(4)))
    merged = merge_smi(base, smi)
    assert [g.socket for g in merged.gpus] == [0, 0, 1, 1]
    assert merged.linked(2, 3)


def test_nvidia_smi_without_gpus() -> None:
    assert parse_nvidia_smi_topo("No devices were found\n").nvlinks == frozenset()
