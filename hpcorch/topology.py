"""The hardware topology of one node: sockets, cores, memory, GPUs, NVLink.

A :class:`NodeTopology` is plain frozen data, built from a site config's
:class:`~hpcorch.sites.model.NodeShape` or detected from what the machine and
Slurm report. The parsers are pure functions over text:

- ``scontrol show node -d`` (``Sockets=``, ``CoresPerSocket=``, ``RealMemory=``,
  ``Gres=gpu:a100:2(S:0),gpu:a100:2(S:1)``),
- ``gres.conf`` (``Name=gpu File=/dev/nvidia[0-3] Cores=0-3 Links=-1,2,0,0``),
- ``nvidia-smi topo -m`` (``NV12`` entries, CPU and NUMA affinity),
- on AMD, ``amd-smi topology`` (``LINK TYPE TABLE``/``WEIGHT TABLE`` by PCI address)
  and ``rocm-smi --showtopo`` (the same tables by GPU index, plus ``Numa Node`` lines).
  XGMI (Infinity Fabric) plays NVLink's part: the GPU pairs it joins most closely (the
  lowest XGMI weight) are the linked pairs the placement rules prefer.

Core ids are Slurm's abstract ones: socket ``s`` owns cores
``s * cores_per_socket ... (s + 1) * cores_per_socket - 1``.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from hpcorch.sites.model import NodeShape
from hpcorch.slurm.hostlists import expand_hostlist

__all__ = [
    "GpuInfo",
    "GresGpu",
    "NodeTopology",
    "SmiTopology",
    "detect_topology",
    "merge_gres",
    "merge_smi",
    "parse_amd_smi_topology",
    "parse_gres_conf",
    "parse_index_list",
    "parse_nvidia_smi_topo",
    "parse_rocm_smi_topo",
    "parse_scontrol_nodes",
]

logger = logging.getLogger(__name__)

_MIB = 1024**2


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """One GPU: its index on the node, its socket (None: unknown) and model."""

    index: int
    socket: int | None = None
    type: str | None = None


@dataclass(frozen=True, slots=True)
class NodeTopology:
    """One node's sockets, cores, memory (bytes), GPUs and NVLink pairs."""

    sockets: int
    cores_per_socket: int
    memory: int
    gpus: tuple[GpuInfo, ...] = ()
    nvlinks: frozenset[tuple[int, int]] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.sockets < 1 or self.cores_per_socket < 1:
            raise ValueError("a node needs at least one socket and one core per socket")
        if [g.index for g in self.gpus] != list(range(len(self.gpus))):
            raise ValueError("GPU indices must be 0..n-1 in order")
        for gpu in self.gpus:
            if gpu.socket is not None and not 0 <= gpu.socket < self.sockets:
                raise ValueError(
                    f"GPU {gpu.index} is on socket {gpu.socket}, node has {self.sockets}"
                )
        # Store each link once, lowest index first, so lookups need no symmetry.
        links = frozenset((min(a, b), max(a, b)) for a, b in self.nvlinks if a != b)
        for a, b in links:
            if b >= len(self.gpus):
                raise ValueError(f"NVLink {a}-{b} names a GPU the node does not have")
        object.__setattr__(self, "nvlinks", links)

    @property
    def cores(self) -> int:
        return self.sockets * self.cores_per_socket

    @property
    def gpu_count(self) -> int:
        return len(self.gpus)

    def socket_cores(self, socket: int) -> range:
        """Core ids of one socket."""
        start = socket * self.cores_per_socket
        return range(start, start + self.cores_per_socket)

    def socket_of_core(self, core: int) -> int:
        return core // self.cores_per_socket

    def linked(self, a: int, b: int) -> bool:
        """Whether GPUs ``a`` and ``b`` are joined by NVLink."""
        return (min(a, b), max(a, b)) in self.nvlinks

    def gpu_socket(self, index: int) -> int | None:
        return self.gpus[index].socket

    @classmethod
    def from_shape(cls, shape: NodeShape) -> NodeTopology:
        """The topology a site config declares. GPUs without a socket are spread evenly."""
        sockets = shape.gpu_sockets or _spread(shape.gpus, shape.sockets)
        gpus = tuple(GpuInfo(i, sockets[i], shape.gpu_type) for i in range(shape.gpus))
        return cls(
            sockets=shape.sockets,
            cores_per_socket=shape.cores_per_socket,
            memory=shape.memory,
            gpus=gpus,
            nvlinks=frozenset(shape.nvlinks),
        )

    def to_shape(self) -> NodeShape:
        """The site-config form; unknown GPU sockets are written as an empty tuple."""
        sockets = tuple(g.socket for g in self.gpus)
        known = all(s is not None for s in sockets)
        return NodeShape(
            sockets=self.sockets,
            cores_per_socket=self.cores_per_socket,
            memory=self.memory,
            gpus=len(self.gpus),
            gpu_type=self.gpus[0].type if self.gpus else None,
            gpu_sockets=tuple(s for s in sockets if s is not None) if known else (),
            nvlinks=tuple(sorted(self.nvlinks)),
        )


def _spread(gpus: int, sockets: int) -> tuple[int, ...]:
    # Vendors wire GPUs in socket order: the first half on socket 0, and so on.
    return tuple(i * sockets // gpus for i in range(gpus)) if gpus else ()


# ---------------------------------------------------------------- text parsers


def parse_index_list(text: str) -> tuple[int, ...]:
    """``"0-3,8,10-11"`` → ``(0, 1, 2, 3, 8, 10, 11)``."""
    out: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f"not an index list: {text!r} (expected e.g. '0-3,8')")
        out.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    return tuple(out)


@dataclass(frozen=True, slots=True)
class GresGpu:
    """One GPU line of gres.conf, expanded to a single device."""

    node: str | None
    type: str | None
    file: str | None
    cores: tuple[int, ...] = ()
    links: tuple[int, ...] = ()


def parse_gres_conf(text: str, node: str | None = None) -> list[GresGpu]:
    """GPU devices in a gres.conf, in file order (= GPU index order).

    ``node`` keeps only lines for that node (lines without ``NodeName=`` apply
    to every node). ``File=/dev/nvidia[0-1]`` expands to two GPUs sharing the
    line's ``Cores=``; ``Links=`` is meaningful only on one-device lines.
    """
    gpus: list[GresGpu] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields: dict[str, str] = {}
        for token in line.split():
            key, sep, value = token.partition("=")
            if sep:
                fields[key.lower()] = value
        if fields.get("name") != "gpu":
            continue
        names = expand_hostlist(fields["nodename"]) if "nodename" in fields else None
        if node is not None and names is not None and node not in names:
            continue
        files = expand_hostlist(fields["file"]) if "file" in fields else ()
        count = len(files) or int(fields.get("count", "1"))
        cores = parse_index_list(fields["cores"]) if "cores" in fields else ()
        links = tuple(int(v) for v in fields["links"].split(",")) if "links" in fields else ()
        for i in range(count):
            gpus.append(
                GresGpu(
                    node=node if names is not None else None,
                    type=fields.get("type"),
                    file=files[i] if files else None,
                    cores=cores,
                    links=links if count == 1 else (),
                )
            )
    return gpus


_GRES_ITEM_RE = re.compile(
    r"gpu(?::(?P<type>[^:(,]+))?:(?P<count>\d+)(?:\(S:(?P<sockets>[^)]*)\))?"
)


def _kv(block: str) -> dict[str, str]:
    return {k: v for k, v in re.findall(r"(\w+)=(\S*)", block)}


def parse_scontrol_nodes(text: str) -> dict[str, NodeTopology]:
    """Topologies from ``scontrol show node -d`` output, by node name.

    GPU sockets come from ``Gres=gpu:type:N(S:a-b)``: an entry whose socket
    range is a single socket pins those GPUs there; a range over several
    sockets leaves them spread in socket order (refine with gres.conf Cores=).
    """
    nodes: dict[str, NodeTopology] = {}
    for block in re.split(r"\n(?=NodeName=)", text.strip()):
        kv = _kv(block)
        name = kv.get("NodeName")
        if not name:
            continue
        sockets = int(kv.get("Sockets", "1"))
        cores_per_socket = int(kv.get("CoresPerSocket", "1"))
        memory = int(kv.get("RealMemory", "1")) * _MIB
        gpus: list[GpuInfo] = []
        for item in _GRES_ITEM_RE.finditer(kv.get("Gres", "")):
            count = int(item["count"])
            span = parse_index_list(item["sockets"]) if item["sockets"] else tuple(range(sockets))
            for j in range(count):
                socket = span[0] if len(span) == 1 else span[j * len(span) // count]
                gpus.append(GpuInfo(len(gpus), socket, item["type"]))
        nodes[name] = NodeTopology(sockets, cores_per_socket, max(memory, 1), tuple(gpus))
    return nodes


@dataclass(frozen=True, slots=True)
class SmiTopology:
    """What ``nvidia-smi topo -m`` says: CPU and NUMA affinity per GPU, NVLink pairs."""

    cpus: tuple[tuple[int, ...], ...]
    numa: tuple[int | None, ...]
    nvlinks: frozenset[tuple[int, int]]


def parse_nvidia_smi_topo(text: str) -> SmiTopology:
    """Parse the matrix ``nvidia-smi topo -m`` prints (NIC rows and legend ignored)."""
    lines = [line for line in text.splitlines() if line.strip()]
    header = next((line for line in lines if re.match(r"\s+GPU0\b", line)), None)
    if header is None:
        return SmiTopology((), (), frozenset())
    device_columns = [t for t in header.split() if re.fullmatch(r"GPU\d+|NIC\d+|mlx\w+", t)]
    cpus: list[tuple[int, ...]] = []
    numa: list[int | None] = []
    links: set[tuple[int, int]] = set()
    for line in lines[lines.index(header) + 1 :]:
        # ANSI escapes appear when stdout is a terminal.
        tokens = re.sub(r"\x1b\[[0-9;]*m", "", line).split()
        if not tokens or not re.fullmatch(r"GPU\d+", tokens[0]):
            continue
        row = int(tokens[0][3:])
        cells = tokens[1 : 1 + len(device_columns)]
        for column, cell in zip(device_columns, cells, strict=False):
            if column.startswith("GPU") and cell.startswith("NV"):
                other = int(column[3:])
                links.add((min(row, other), max(row, other)))
        rest = tokens[1 + len(device_columns) :]
        cpus.append(parse_index_list(rest[0]) if rest and rest[0] != "N/A" else ())
        numa.append(int(rest[1]) if len(rest) > 1 and rest[1].isdigit() else None)
    return SmiTopology(tuple(cpus), tuple(numa), frozenset(links))


_RULE_RE = re.compile(r"^=+\s*(.*?)\s*=+$")


def _smi_sections(text: str, rule: re.Pattern[str]) -> dict[str, list[str]]:
    """Lines of each titled section (titles lower-cased)."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for raw in text.splitlines():
        line = re.sub(r"\x1b\[[0-9;]*m", "", raw).rstrip()
        match = rule.match(line.strip())
        if match:
            current = sections.setdefault(match.group(1).strip().lower(), [])
        elif current is not None and line.strip():
            current.append(line)
    return sections


def _matrix(lines: list[str]) -> list[list[str]]:
    """The cells of a GPU x GPU table: its first line names the columns, each row
    starts with its GPU's name. Rows in order; cells in column order."""
    if not lines:
        return []
    width = len(lines[0].split())
    return [line.split()[1 : 1 + width] for line in lines[1:] if len(line.split()) > width]


def _xgmi_links(types: list[list[str]], weights: list[list[str]]) -> frozenset[tuple[int, int]]:
    """GPU pairs joined by XGMI; where weights are known, only the closest (lowest weight)."""
    xgmi = {
        (i, j)
        for i, row in enumerate(types)
        for j, cell in enumerate(row)
        if i < j and cell.upper() == "XGMI"
    }
    weight: dict[tuple[int, int], int] = {}
    for i, j in xgmi:
        cell = weights[i][j] if i < len(weights) and j < len(weights[i]) else ""
        if cell.isdigit():
            weight[(i, j)] = int(cell)
    if weight and len(weight) == len(xgmi):
        best = min(weight.values())
        xgmi = {pair for pair, w in weight.items() if w == best}
    return frozenset(xgmi)


def parse_rocm_smi_topo(text: str) -> SmiTopology:
    """Parse ``rocm-smi --showtopo``: ``Weight between two GPUs``, ``Link Type between
    two GPUs`` tables and ``GPU[i] : (Topology) Numa Node: n`` lines. No CPU lists:
    the NUMA node stands for the GPU's socket (see :func:`merge_smi`)."""
    sections = _smi_sections(text, _RULE_RE)
    types = _matrix(sections.get("link type between two gpus", []))
    weights = _matrix(sections.get("weight between two gpus", []))
    numa: dict[int, int] = {}
    for line in sections.get("numa nodes", []):
        match = re.match(r"GPU\[(\d+)\]\s*:\s*\(Topology\) Numa Node:\s*(-?\d+)", line.strip())
        if match and int(match.group(2)) >= 0:
            numa[int(match.group(1))] = int(match.group(2))
    count = max(len(types), max(numa, default=-1) + 1)
    return SmiTopology(
        cpus=tuple(() for _ in range(count)),
        numa=tuple(numa.get(i) for i in range(count)),
        nvlinks=_xgmi_links(types, weights),
    )


_AMD_SMI_TITLE_RE = re.compile(r"^([A-Z][A-Z ]+ TABLE):$")


def parse_amd_smi_topology(text: str) -> SmiTopology:
    """Parse ``amd-smi topology``: ``LINK TYPE TABLE:`` and ``WEIGHT TABLE:`` keyed by
    PCI address, rows in GPU index order. It gives no CPU or NUMA affinity."""
    sections = _smi_sections(text, _AMD_SMI_TITLE_RE)
    types = _matrix(sections.get("link type table", []))
    weights = _matrix(sections.get("weight table", []))
    count = len(types)
    return SmiTopology(
        cpus=tuple(() for _ in range(count)),
        numa=tuple(None for _ in range(count)),
        nvlinks=_xgmi_links(types, weights),
    )


def merge_gres(topology: NodeTopology, gres: Sequence[GresGpu]) -> NodeTopology:
    """Refine GPU sockets from gres.conf ``Cores=`` and NVLink pairs from ``Links=``."""
    if len(gres) != topology.gpu_count:
        logger.debug("gres.conf lists %d GPUs, node has %d; ignored", len(gres), topology.gpu_count)
        return topology
    gpus = list(topology.gpus)
    links = set(topology.nvlinks)
    for i, entry in enumerate(gres):
        if entry.cores:
            sockets = {topology.socket_of_core(c) for c in entry.cores}
            if len(sockets) == 1:
                gpus[i] = replace(gpus[i], socket=sockets.pop())
        for j, count in enumerate(entry.links):
            if j != i and count > 0 and j < len(gres):
                links.add((min(i, j), max(i, j)))
    return replace(topology, gpus=tuple(gpus), nvlinks=frozenset(links))


def merge_smi(topology: NodeTopology, smi: SmiTopology) -> NodeTopology:
    """Refine GPU sockets from CPU affinity (or, without it, from NUMA nodes when there
    are as many as sockets) and add NVLink / XGMI pairs from nvidia-smi, amd-smi, rocm-smi."""
    if len(smi.cpus) != topology.gpu_count:
        return topology
    gpus = list(topology.gpus)
    numa = [n for n in smi.numa if n is not None]
    numa_is_socket = len(numa) == len(smi.numa) and max(numa, default=-1) + 1 == topology.sockets
    for i, cpus in enumerate(smi.cpus):
        sockets = {topology.socket_of_core(c) for c in cpus if c < topology.cores}
        if not cpus and numa_is_socket:
            sockets = {numa[i]}
        if len(sockets) == 1:
            gpus[i] = replace(gpus[i], socket=sockets.pop())
    return replace(topology, gpus=tuple(gpus), nvlinks=topology.nvlinks | smi.nvlinks)


# ---------------------------------------------------------------- thin runner


def _run(argv: Sequence[str], timeout: float = 10.0) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.debug("%s failed: %s", argv[0], exc)
        return None
    return done.stdout if done.returncode == 0 else None


def detect_topology(
    node: str,
    gres_conf: str | None = None,
    commands: Iterable[str] = ("scontrol", "nvidia-smi", "amd-smi", "rocm-smi"),
) -> NodeTopology | None:
    """Detect one node's topology from Slurm (and the GPU vendor's tool where present).

    ``gres_conf`` is the file's text, when readable. Returns None when Slurm
    does not know the node. Runs ``scontrol show node -d NODE`` and, on a
    machine with NVIDIA GPUs, ``nvidia-smi topo -m``; with AMD GPUs,
    ``amd-smi topology`` or, without amd-smi, ``rocm-smi --showtopo``.
    """
    wanted = set(commands)
    text = _run(["scontrol", "show", "node", "-d", node]) if "scontrol" in wanted else None
    topology = parse_scontrol_nodes(text).get(node) if text else None
    if topology is None:
        return None
    if gres_conf:
        topology = merge_gres(topology, parse_gres_conf(gres_conf, node))
    smi = _run(["nvidia-smi", "topo", "-m"]) if "nvidia-smi" in wanted else None
    if smi:
        return merge_smi(topology, parse_nvidia_smi_topo(smi))
    amd = _run(["amd-smi", "topology"]) if "amd-smi" in wanted else None
    if amd:
        return merge_smi(topology, parse_amd_smi_topology(amd))
    rocm = _run(["rocm-smi", "--showtopo"]) if "rocm-smi" in wanted else None
    if rocm:
        topology = merge_smi(topology, parse_rocm_smi_topo(rocm))
    return topology
