"""Which GPUs a process may use, for both vendors: the environment variables that say so.

NVIDIA's runtime reads ``CUDA_VISIBLE_DEVICES``. AMD's ROCm reads ``ROCR_VISIBLE_DEVICES``
first (device ids of the node, what Slurm's ``Flags=amd_gpu_env`` exports) and then
``HIP_VISIBLE_DEVICES``, whose ids count among the devices ROCr left visible; HIP also
honours ``CUDA_VISIBLE_DEVICES`` as an alias of ``HIP_VISIBLE_DEVICES``, so on AMD that
variable must not carry node-wide ids. Pure functions; nothing here looks at hardware.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

__all__ = [
    "GPU_ENV_VARS",
    "GpuVendor",
    "apply_gpu_env",
    "env_vendor",
    "gpu_env",
    "vendor_of",
    "visible_gpus",
]

GpuVendor = Literal["nvidia", "amd"]

# Every variable that narrows a process's GPUs, whichever vendor.
GPU_ENV_VARS = ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")

# GPU models whose name says AMD: Instinct MI*, Radeon, gfx targets.
_AMD_PREFIXES = ("mi", "amd", "radeon", "instinct", "gfx")


def vendor_of(gpu_type: str | None, declared: str | None = None) -> GpuVendor:
    """The vendor a site declares (``gpu_vendor``), else the one its GPU type names
    (``mi250x``, ``MI300A``, ``gfx90a``: AMD), else NVIDIA."""
    if declared in ("nvidia", "amd"):
        return declared  # type: ignore[return-value]
    name = (gpu_type or "").strip().lower()
    return "amd" if name.startswith(_AMD_PREFIXES) else "nvidia"


def env_vendor(env: Mapping[str, str]) -> GpuVendor | None:
    """The vendor whose variable Slurm set for this process (None: neither, or both).

    Slurm sets only its vendor's variable where gres.conf says ``Flags=amd_gpu_env`` or
    ``nvidia_gpu_env``, but every vendor's by default: both set say nothing.
    """
    rocr = "ROCR_VISIBLE_DEVICES" in env
    cuda = "CUDA_VISIBLE_DEVICES" in env
    if rocr and not cuda:
        return "amd"
    if cuda and not rocr:
        return "nvidia"
    return None


def visible_gpus(env: Mapping[str, str], vendor: GpuVendor | None = None) -> tuple[str, ...] | None:
    """The node's GPU ids this process may use (None: not narrowed, all of them).

    On AMD that is ``ROCR_VISIBLE_DEVICES`` (node-wide ids); on NVIDIA
    ``CUDA_VISIBLE_DEVICES``. Without a vendor, whichever of the two is set.
    """
    vendor = vendor or env_vendor(env)
    value = env.get("ROCR_VISIBLE_DEVICES" if vendor == "amd" else "CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return tuple(v.strip() for v in value.split(",") if v.strip())


def gpu_env(names: list[str] | tuple[str, ...], vendor: GpuVendor) -> dict[str, str | None]:
    """Variables that confine a process to GPUs ``names`` (node-wide ids or UUIDs).

    Values of None mean "remove". An empty ``names`` hides every GPU. On AMD:
    ``ROCR_VISIBLE_DEVICES`` = the names, ``HIP_VISIBLE_DEVICES`` = 0..n-1 (relative
    to what ROCr shows) and no ``CUDA_VISIBLE_DEVICES``; on NVIDIA the reverse.
    """
    joined = ",".join(names)
    if vendor == "amd":
        return {
            "ROCR_VISIBLE_DEVICES": joined,
            "HIP_VISIBLE_DEVICES": ",".join(str(i) for i in range(len(names))),
            "CUDA_VISIBLE_DEVICES": None,
        }
    return {
        "CUDA_VISIBLE_DEVICES": joined,
        "ROCR_VISIBLE_DEVICES": None,
        "HIP_VISIBLE_DEVICES": None,
    }


def apply_gpu_env(
    env: dict[str, str], names: list[str] | tuple[str, ...], vendor: GpuVendor
) -> None:
    """Set (and remove) in ``env`` what :func:`gpu_env` says, in place."""
    for key, value in gpu_env(names, vendor).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
