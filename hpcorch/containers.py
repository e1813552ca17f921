"""Containers: what a task or a pool runs in, and the argv that starts a command in it.

A :class:`Container` (frozen, validated) names a runtime (``apptainer``,
``podman``, ``podman-hpc``, ``shifter``), a local image, bind mounts and extra
flags. :func:`container_argv` (pure) turns it and a command into the argv that
runs the command inside the image: no shell, every value one argv item. GPU
pass-through (``--nv``, ``--rocm``, CDI devices) is added only when the task
holds GPUs. :func:`check_container` is the edge check (image and bind sources
exist, the runtime is installed), run before anything is submitted.

Nothing is pulled at run time: images are local files or directories (an
Apptainer ``.sif``, a sandbox), or names in the local store of podman
(``localhost/name:tag``) and Shifter (``--image`` names the site's gateway
holds); registry references (``docker://``) are refused.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "RUNTIMES",
    "Container",
    "check_container",
    "container_argv",
    "image_is_path",
    "runtime_own_codes",
]

Runtime = Literal["apptainer", "singularity", "podman", "podman-hpc", "shifter"]
RUNTIMES: tuple[str, ...] = ("apptainer", "singularity", "podman", "podman-hpc", "shifter")
GpuKind = Literal["nvidia", "amd"]

# An image name a local store may hold: registry/path:tag or @digest, no scheme.
_IMAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]*")
_REMOTE = ("docker://", "library://", "oras://", "shub://", "http://", "https://")
# Archive transports podman reads from a local file
_ARCHIVES = ("oci-archive:", "docker-archive:", "oci:", "dir:")

# Environment every task attempt carries (hpcorch's own, the slot's placement, Slurm's);
# podman starts a container with the image's environment only, so these are passed
# (a trailing * passes every variable with that prefix; an unset name, nothing).
TASK_ENV_NAMES = (
    "HPCORCH_RUN_ID",
    "HPCORCH_TASK_ID",
    "HPCORCH_ATTEMPT",
    "HPCORCH_RUN_DIR",
    "HPCORCH_SITE",
    "CUDA_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "HIP_VISIBLE_DEVICES",
    "OMP_NUM_THREADS",
    # an MPI rank's identity and wire-up (srun starts each rank's container)
    "SLURM_*",
    "PMI_*",
    "PMIX_*",
    "OMPI_*",
)


def _single_line(value: str, what: str) -> str:
    if not value or any(c in value for c in "\n\r\0"):
        raise ValueError(f"{what} {value!r:.60} must be a non-empty single line")
    return value


def image_is_path(runtime: str, image: str) -> bool:
    """Whether ``image`` names a file or directory (else a name in the runtime's store)."""
    if runtime in ("apptainer", "singularity"):
        return True  # a .sif file or a sandbox directory
    if image.startswith(_ARCHIVES):
        return True
    return image.startswith(("/", "./", "../", "~"))


def _image_path(runtime: str, image: str) -> Path:
    for prefix in _ARCHIVES:
        if image.startswith(prefix):
            image = image[len(prefix) :].split(":", 1)[0] if prefix != "dir:" else image[4:]
            break
    return Path(image).expanduser()


class Container(BaseModel):
    """A container a command task runs in, or a pool's workers start in."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    runtime: Runtime = Field(..., description="apptainer, singularity, podman, podman-hpc, shifter")
    image: str = Field(..., description="a local image file/directory, or a local store's name")
    binds: tuple[str, ...] = Field(
        (), description="SRC[:DST[:ro]] mounts; SRC must exist where the task runs"
    )
    flags: tuple[str, ...] = Field((), description="more options of the runtime's run command")
    gpus: GpuKind = Field("nvidia", description="GPU pass-through kind when the task holds GPUs")
    python: str = Field(
        "python3", description="the image's Python, which starts a pool's Dask workers"
    )

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if key not in cls.model_fields:
                    valid = ", ".join(cls.model_fields)
                    raise ValueError(f"unknown key {key!r} (valid keys: {valid})")
            runtime = data.get("runtime")
            if isinstance(runtime, str) and runtime not in RUNTIMES:
                raise ValueError(
                    f"runtime {runtime!r:.40} is not one hpcorch knows; use one of "
                    f"{', '.join(RUNTIMES)}"
                )
        return data

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        _single_line(value, "image")
        if value.startswith(_REMOTE):
            raise ValueError(
                f"image {value!r:.80} is a registry reference; nothing is pulled at run time: "
                "use a local image file (e.g. a .sif) or a name in the runtime's local store"
            )
        if value.startswith("-"):
            raise ValueError(f"image {value!r:.60} must not start with '-'")
        return value

    @field_validator("binds")
    @classmethod
    def _binds(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for bind in value:
            _single_line(bind, "bind")
            parts = bind.split(":")
            if len(parts) > 3 or not all(parts) or not parts[0].startswith("/"):
                raise ValueError(
                    f"bind {bind!r:.80} must be SRC[:DST[:ro|rw]] with absolute paths and no "
                    "extra ':'"
                )
            if len(parts) >= 2 and not parts[1].startswith("/"):
                raise ValueError(f"bind {bind!r:.80}: the destination must be an absolute path")
            if len(parts) == 3 and parts[2] not in ("ro", "rw"):
                raise ValueError(f"bind {bind!r:.80}: the mode must be ro or rw")
        return value

    @field_validator("flags")
    @classmethod
    def _flags(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for flag in value:
            if "\0" in flag or "\n" in flag:
                raise ValueError(f"flag {flag!r:.60} must be a single line")
        return value

    @field_validator("python")
    @classmethod
    def _python(cls, value: str) -> str:
        _single_line(value, "python")
        if value.startswith("-") or any(c.isspace() for c in value):
            raise ValueError(f"python {value!r:.60} must be one program name or path")
        return value

    @model_validator(mode="after")
    def _image_form(self) -> Container:
        if not image_is_path(self.runtime, self.image) and not _IMAGE_NAME.fullmatch(self.image):
            raise ValueError(
                f"image {self.image!r:.80} is neither a path nor an image name "
                "(letters, digits and . _ / : @ + -)"
            )
        return self


def _bind_parts(bind: str) -> tuple[str, str, str | None]:
    parts = bind.split(":")
    src = parts[0]
    dst = parts[1] if len(parts) > 1 else src
    mode = parts[2] if len(parts) > 2 else None
    return src, dst, mode


def _gpu_flags(c: Container) -> list[str]:
    if c.runtime in ("apptainer", "singularity"):
        return ["--nv"] if c.gpus == "nvidia" else ["--rocm"]
    if c.runtime == "podman-hpc":
        return ["--gpu"]
    if c.runtime == "podman":
        if c.gpus == "nvidia":  # the NVIDIA Container Toolkit's CDI spec
            return ["--device", "nvidia.com/gpu=all"]
        return ["--device", "/dev/kfd", "--device", "/dev/dri"]
    return ["--module=gpu"]  # shifter


# Exit codes a runtime uses for its own failures (the image or the runtime, not the command);
# any other code is the command's, passed on. apptainer/singularity end with 255 on a FATAL;
# shifter documents none, so every code of its is taken as the runtime's.
_RUNTIME_OWN_CODES: dict[str, tuple[int, ...]] = {
    "podman": (125, 126, 127),
    "podman-hpc": (125, 126, 127),
    "apptainer": (255,),
    "singularity": (255,),
}


def runtime_own_codes(runtime: str) -> tuple[int, ...] | None:
    """The exit codes that are the runtime's own; None when it does not pass the command's on."""
    return _RUNTIME_OWN_CODES.get(runtime)


def container_argv(
    c: Container,
    command: Sequence[str],
    *,
    gpus: bool = False,
    env_names: Iterable[str] = (),
    workdir: str | None = None,
    extra_binds: Iterable[str] = (),
) -> list[str]:
    """The argv that runs ``command`` inside ``c`` (pure).

    ``gpus``: pass the node's GPUs through (only for a task that holds some; the
    slot's ``CUDA_VISIBLE_DEVICES`` still selects among them). ``env_names``:
    variables to carry into the container from the caller's environment (podman
    starts from the image's; apptainer and shifter keep the caller's).
    ``workdir``: the directory the command starts in (bound where it is).
    ``extra_binds``: directories hpcorch needs inside (the run directory).
    """
    binds = list(dict.fromkeys([*c.binds, *extra_binds]))
    rt = c.runtime
    argv: list[str]
    if rt in ("apptainer", "singularity"):
        argv = [rt, "exec"]
        for bind in binds:
            argv += ["--bind", bind]
        if workdir:
            argv += ["--pwd", workdir]
        if gpus:
            argv += _gpu_flags(c)
        argv += [*c.flags, c.image]
    elif rt in ("podman", "podman-hpc"):
        # The host's network (a worker reaches its scheduler) and IPC. Where the OCI
        # runtime allows it, a site may add --cgroups=disabled to its flags: the
        # container then stays in the Slurm job's cgroup and ends with it.
        argv = [rt, "run", "--rm", "--network=host", "--ipc=host", "--log-driver=none"]
        for name in dict.fromkeys([*env_names, *TASK_ENV_NAMES]):
            argv += ["--env", name]  # a name alone: its value from the caller, if set
        for bind in binds:
            src, dst, mode = _bind_parts(bind)
            argv += ["--volume", f"{src}:{dst}" + (f":{mode}" if mode else "")]
        if workdir:
            argv += ["--workdir", workdir]
        if gpus:
            argv += _gpu_flags(c)
        argv += [*c.flags, c.image]
    else:  # shifter
        argv = ["shifter", f"--image={c.image}"]
        for bind in binds:
            src, dst, mode = _bind_parts(bind)
            argv.append(f"--volume={src}:{dst}" + (":ro" if mode == "ro" else ""))
        if workdir:
            argv.append(f"--workdir={workdir}")
        if gpus:
            argv += _gpu_flags(c)
        argv += [*c.flags, "--"]
    return [*argv, *command]


def check_container(c: Container, where: str, *, runtime_here: bool = True) -> None:
    """ValueError (one line, naming ``where``) when the image or a bind source is missing,
    or ``runtime_here`` and the runtime is not installed on this machine."""
    if image_is_path(c.runtime, c.image):
        path = _image_path(c.runtime, c.image)
        if not path.exists():
            raise ValueError(f"{where}: container image {str(path)!r} does not exist")
    for bind in c.binds:
        src = _bind_parts(bind)[0]
        if not Path(src).exists():
            raise ValueError(
                f"{where}: container bind {bind!r} mounts {src!r}, which does not exist"
            )
    if not runtime_here:
        return
    exe = shutil.which(c.runtime)
    if exe is None:
        raise ValueError(f"{where}: container runtime {c.runtime!r} is not installed (not on PATH)")
    if c.runtime == "podman" and not image_is_path(c.runtime, c.image):
        found = subprocess.run(
            [exe, "image", "exists", c.image], capture_output=True, check=False, timeout=60
        )
        if found.returncode == 1:
            raise ValueError(
                f"{where}: podman has no image {c.image!r} in its local store "
                "(podman images lists them; podman load/import adds one)"
            )
