"""Build a site config from a live cluster.

``scontrol show partition -o`` gives partitions, ``scontrol show node -d``
node shapes and GRES, gres.conf (next to slurm.conf, when readable) each
GPU's cores (socket affinity) and NVLink ``Links=``, ``scontrol show config``
the cluster name, version and MaxArraySize, ``srun --mpi=list`` whether PMIx
is there (else Open MPI's own ``mpirun`` launches). :func:`build_site` is pure;
:func:`detect_site` runs the commands.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from hpcorch.childenv import child_env
from hpcorch.errors import SlurmError
from hpcorch.sites.model import Site
from hpcorch.slurm.cli import run_command
from hpcorch.slurm.hostlists import expand_hostlist
from hpcorch.topology import merge_gres, parse_gres_conf, parse_scontrol_nodes
from hpcorch.units import format_duration

__all__ = ["build_site", "detect_site", "site_to_yaml"]

logger = logging.getLogger(__name__)

_MIB = 1024**2


def _kv(line: str) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S*)", line))


def _config(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def build_site(
    *,
    partitions_text: str,
    nodes_text: str,
    config_text: str = "",
    gres_conf: str | None = None,
    mpi_list: str = "",
    name: str | None = None,
    conf: str | None = None,
) -> Site:
    """A site from the text the Slurm commands print (pure)."""
    config = _config(config_text)
    cluster = config.get("ClusterName") or "detected"
    topologies = parse_scontrol_nodes(nodes_text)
    gpu_types = {
        m["node"]: m["type"]
        for m in re.finditer(
            r"NodeName=(?P<node>\S+).*?Gres=gpu:(?P<type>[^:(\s,]+):\d", nodes_text
        )
    }
    if gres_conf:
        topologies = {
            node: merge_gres(topo, parse_gres_conf(gres_conf, node))
            for node, topo in topologies.items()
        }
    partitions: list[dict[str, Any]] = []
    for line in partitions_text.splitlines():
        kv = _kv(line)
        if "PartitionName" not in kv:
            continue
        names = expand_hostlist(kv.get("Nodes"))
        shapes = [topologies[n].to_shape() for n in names if n in topologies]
        if not shapes:
            logger.warning("partition %s: no node details; skipped", kv["PartitionName"])
            continue
        if any(s != shapes[0] for s in shapes[1:]):
            logger.warning(
                "partition %s mixes node shapes; using %s's", kv["PartitionName"], names[0]
            )
        shape = shapes[0]
        entry: dict[str, Any] = {
            "name": kv["PartitionName"],
            "nodes": len(names),
            "node_names": kv.get("Nodes"),
            "node": shape.model_dump(exclude_defaults=True),
        }
        if kv.get("Default") == "YES":
            entry["default"] = True
        gpu_type = gpu_types.get(names[0])
        if shape.gpus:
            entry["gres"] = f"gpu:{gpu_type}" if gpu_type else "gpu"
        max_time = kv.get("MaxTime", "UNLIMITED")
        if max_time not in ("UNLIMITED", "INFINITE"):
            entry["max_walltime_s"] = max_time
        if kv.get("MaxNodes", "UNLIMITED").isdigit():
            entry["max_nodes_per_job"] = int(kv["MaxNodes"])
        partitions.append(entry)
    version = config.get("SLURM_VERSION")
    data: dict[str, Any] = {
        "name": name or cluster,
        "kind": "slurm",
        "description": f"detected from Slurm cluster {cluster!r}",
        "slurm": {
            "backends": ["cli"],
            "cluster": cluster,
            **({"version": ".".join(version.split(".")[:2])} if version else {}),
            **({"conf": conf} if conf else {}),
        },
        "partitions": partitions,
    }
    if config.get("MaxArraySize", "").isdigit():
        data["limits"] = {"max_array_size": int(config["MaxArraySize"])}
    if re.search(r"\bpmix\b", mpi_list):
        # Open MPI's own launcher where a later Slurm lacks the plugin (Debian's 26.05).
        data["mpi"] = {"launcher": ["srun", "--mpi=pmix"], "fallback": ["mpirun"]}
    elif mpi_list.strip():  # srun without PMIx: Open MPI 5+ speaks no PMI2
        data["mpi"] = {"launcher": ["mpirun"]}
    addresses = re.findall(r"NodeAddr=(\S+)", nodes_text)
    if len(addresses) > 1 and len(set(addresses)) == 1:
        # Several nodes on one host (an emulated cluster, run as root by
        # scripts/dev-cluster): OpenMPI's shared-memory transport crashes between
        # ranks of different "nodes" there, TCP works; the nodes' cores are not
        # real ones, so ranks stay unbound; mpirun refuses root without the
        # OMPI_ALLOW_RUN_AS_ROOT pair.
        mpi = data.setdefault("mpi", {})
        mpi["bind"] = "none"
        mpi["env"] = {
            "OMPI_MCA_btl": "self,tcp",
            "OMPI_ALLOW_RUN_AS_ROOT": "1",
            "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
        }
    return Site.model_validate(data)


def detect_site(
    *, name: str | None = None, conf: str | None = None, env: Mapping[str, str] | None = None
) -> Site:
    """Ask the cluster that ``conf`` (or $SLURM_CONF) points at."""
    environ = child_env(os.environ if env is None else env)
    if conf:
        environ["SLURM_CONF"] = conf

    def run(*argv: str, required: bool = True) -> str:
        done = run_command(argv, None, environ, 30.0)
        if done.returncode != 0:
            if required:
                raise SlurmError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
            return ""
        return done.stdout

    config_text = run("scontrol", "show", "config")
    slurm_conf = environ.get("SLURM_CONF") or _config(config_text).get("SLURM_CONF")
    gres_conf = None
    if slurm_conf:
        gres_path = Path(slurm_conf).with_name("gres.conf")
        try:
            gres_conf = gres_path.read_text()
        except OSError:
            logger.info("no readable %s: GPU affinity from scontrol only", gres_path)
    return build_site(
        partitions_text=run("scontrol", "show", "partition", "-o"),
        nodes_text=run("scontrol", "show", "node", "-d", "-o"),
        config_text=config_text,
        gres_conf=gres_conf,
        mpi_list=run("srun", "--mpi=list", required=False),
        name=name,
        conf=conf,
    )


def _humanize(data: Any, key: str = "") -> Any:
    if isinstance(data, dict):
        return {k: _humanize(v, k) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_humanize(v) for v in data]
    if key == "memory" and isinstance(data, int) and data % _MIB == 0:
        return f"{data // _MIB}M"
    if key.endswith("walltime_s") and isinstance(data, float):
        return format_duration(data)
    return data


def site_to_yaml(site: Site) -> str:
    """A site as a readable YAML file (defaults left out, sizes and times in units)."""
    data = _humanize(site.model_dump(mode="json", exclude_defaults=True))
    # Keep the identity keys first, the way shipped files read.
    ordered = {k: data[k] for k in ("name", "kind", "description") if k in data}
    ordered.update({k: v for k, v in data.items() if k not in ordered})
    return yaml.safe_dump(ordered, sort_keys=False, default_flow_style=None)
