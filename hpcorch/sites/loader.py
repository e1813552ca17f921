"""Find, read and validate site configuration files.

A site is named (``dev``) or given as a path (``./mysite.yaml``). Names are
looked up in (the first is the top layer):

1. each directory of ``$HPCORCH_SITE_PATH`` (``:``-separated),
2. ``~/.config/hpcorch/sites`` (``$XDG_CONFIG_HOME`` respected),
3. the shipped ``site-configs/``: the source checkout's copy when hpcorch runs
   from one (``pip install -e .``), else the copy a wheel installs under
   ``<prefix>/share/hpcorch/site-configs``.

Files layer: every file of a site's name found there is deep-merged over the
next one down (``dask.config.merge``: mappings merge, other values replace), so
``~/.config/hpcorch/sites/perlmutter.yaml`` holding just ``account: m1234``
completes the shipped ``perlmutter.yaml``. In a layer, ``qos: NAME`` sets the
default QOS, ``partitions`` as a mapping (``partitions: {gpu: {qos: regular}}``)
changes the partitions it names (as a list it replaces them all), and
``extends: NAME`` puts the file over the site ``NAME`` (so a file given by path
can complete a shipped site too).

Every problem becomes a :class:`~hpcorch.errors.SiteConfigError` naming the
file, the key path (``partitions[1].node.cores_per_socket``) and what was
expected; an unknown key lists the valid ones.
"""

from __future__ import annotations

import os
import re
import sys
import sysconfig
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from hpcorch.environment import config_home, site_path
from hpcorch.errors import SiteConfigError
from hpcorch.sites.model import Site
from hpcorch.yamltext import load_yaml_text

__all__ = [
    "expand_vars",
    "format_validation_error",
    "layer_site",
    "list_sites",
    "load_site",
    "parse_site",
    "shipped_dir",
    "site_dirs",
]

_SUFFIXES = (".yaml", ".yml")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-((?:[^{}]|\{[^{}]*\})*))?\}")


def expand_vars(text: str, env: Mapping[str, str] | None = None) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` (default may itself hold ``${...}``)."""
    environ = os.environ if env is None else env

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = environ.get(name, "")
        if value:
            return value
        return expand_vars(default, environ) if default is not None else ""

    return _VAR.sub(sub, text)


def shipped_dir() -> Path | None:
    """The shipped site-configs directory, or None when neither copy exists."""
    checkout = Path(__file__).resolve().parents[2] / "site-configs"
    if checkout.is_dir():
        return checkout
    for scheme in (None, f"{os.name}_user"):
        try:
            data = sysconfig.get_path("data", scheme) if scheme else sysconfig.get_path("data")
        except KeyError:
            continue
        installed = Path(data) / "share" / "hpcorch" / "site-configs"
        if installed.is_dir():
            return installed
    here = Path(__file__).resolve()
    # <prefix>/lib/pythonX.Y/site-packages/hpcorch/sites/loader.py, for --prefix installs
    candidates = (
        [Path(sys.prefix), here.parents[5]] if len(here.parents) > 5 else [Path(sys.prefix)]
    )
    for prefix in candidates:
        installed = prefix / "share" / "hpcorch" / "site-configs"
        if installed.is_dir():
            return installed
    return None


def site_dirs() -> list[Path]:
    """Directories searched for named sites, in order."""
    dirs = site_path()
    dirs.append(config_home() / "hpcorch" / "sites")
    shipped = shipped_dir()
    if shipped is not None:
        dirs.append(shipped)
    return dirs


def _site_files() -> Iterator[tuple[str, Path]]:
    for directory in site_dirs():
        if not directory.is_dir():
            continue
        for path in sorted(directory.iterdir()):
            if path.suffix in _SUFFIXES and path.is_file():
                yield path.stem, path


def list_sites() -> dict[str, Path]:
    """Every site name found, mapped to the file that wins for it."""
    found: dict[str, Path] = {}
    for name, path in _site_files():
        found.setdefault(name, path)
    return found


def _is_path(text: str) -> bool:
    path = Path(text).expanduser()
    return path.suffix in _SUFFIXES or os.sep in text or path.is_file()


def _layers(name_or_path: str | os.PathLike[str]) -> list[Path]:
    """The files of a site, lowest layer first (the shipped one, then the user's)."""
    text = os.fspath(name_or_path)
    if _is_path(text):
        path = Path(text).expanduser()
        if not path.is_file():
            raise SiteConfigError(f"{path}: no such site file")
        return [path]
    found = [path for stem, path in _site_files() if stem == text]
    if found:
        return found[::-1]
    searched = ", ".join(str(d) for d in site_dirs())
    known = ", ".join(sorted(list_sites())) or "none"
    raise SiteConfigError(
        f"unknown site {text!r}; known sites: {known}. Searched: {searched}. "
        "Give a path to a .yaml file or add one to $HPCORCH_SITE_PATH."
    )


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SiteConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    return _mapping(text, str(path))


def _mapping(text: str, source: str) -> dict[str, Any]:
    try:
        data = load_yaml_text(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SiteConfigError(f"{source}{where}: not valid YAML: {problem}") from exc
    if not isinstance(data, dict):
        raise SiteConfigError(f"{source}: expected a mapping of site keys at the top level")
    return data


def layer_site(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge site documents, later ones over earlier ones (pure).

    ``qos: NAME`` in a layer is its default QOS; ``partitions`` as a mapping of name
    to keys changes (or adds) the partitions it names, as a list replaces them all."""
    import dask.config  # noqa: PLC0415  # CLI fast path: --help does not load it

    merged: dict[str, Any] = {}
    parts: dict[str, Any] = {}
    for raw in layers:
        layer = dict(raw)
        if isinstance(layer.get("qos"), str):
            layer["default_qos"] = layer.pop("qos")
        given = layer.pop("partitions", None)
        merged = dask.config.merge(merged, layer)
        if isinstance(given, list):
            parts = {
                str(p.get("name")) if isinstance(p, dict) else f"#{i}": p
                for i, p in enumerate(given)
            }
            if len(parts) < len(given):  # repeated names: let validation say so
                parts = {f"#{i}": p for i, p in enumerate(given)}
        elif isinstance(given, dict):
            for name, raw_keys in given.items():
                keys = {"name": name, **raw_keys} if isinstance(raw_keys, dict) else raw_keys
                old = parts.get(str(name))
                both = isinstance(old, dict) and isinstance(keys, dict)
                parts[str(name)] = dask.config.merge(old, keys) if both else keys  # type: ignore[arg-type]
        elif given is not None:
            parts = {"#0": given}
    if parts:
        merged["partitions"] = list(parts.values())
    return merged


def load_site(name_or_path: str | os.PathLike[str]) -> Site:
    """Load and validate a site by name or path, its files layered (see the module)."""
    paths = _layers(name_or_path)
    docs = [_read(p) for p in paths]
    seen = {os.fspath(name_or_path)}
    # extends: NAME puts the lowest file over the site NAME (at most a few levels).
    while "extends" in docs[0]:
        base = docs[0].pop("extends")
        if not isinstance(base, str) or base in seen or len(seen) > 8:
            raise SiteConfigError(f"{paths[0]}: extends: {base!r} is not a site to extend")
        seen.add(base)
        under = _layers(base)
        paths = [*under, *paths]
        docs = [*(_read(p) for p in under), *docs]
    for doc in docs[1:]:
        doc.pop("extends", None)
    source = " + ".join(str(p) for p in paths)
    return _validate(layer_site(*docs), source)


def parse_site(text: str, source: str = "<string>") -> Site:
    """Validate YAML text as a site; ``source`` names it in errors."""
    data = layer_site(_mapping(text, source))
    if "extends" in data:
        base = data.pop("extends")
        if not isinstance(base, str):
            raise SiteConfigError(f"{source}: extends: {base!r} is not a site to extend")
        under = _layers(base)
        source = " + ".join([*(str(p) for p in under), source])
        data = layer_site(*(_read(p) for p in under), data)
    return _validate(data, source)


def _validate(data: dict[str, Any], source: str) -> Site:
    try:
        return Site.model_validate(data)
    except ValidationError as exc:
        raise SiteConfigError(format_validation_error(exc, source, Site)) from None


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _model_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The pydantic model class that holds the key at ``loc`` (for listing valid keys)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(part)
        if field is None:
            return None
        current = _inner_model(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _inner_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def format_validation_error(exc: ValidationError, source: str, model: type[BaseModel]) -> str:
    """One line per problem: ``file: key.path: what was expected``."""
    lines = []
    errors = exc.errors()
    failed_locs = [tuple(e["loc"]) for e in errors if e["type"] != "too_short"]
    for err in errors:
        if err["type"] == "too_short" and any(
            loc[: len(err["loc"])] == tuple(err["loc"]) for loc in failed_locs
        ):
            continue  # pydantic also counts the items that failed as missing
        loc = tuple(err["loc"])
        # pydantic appends the function-validator name for Annotated fields
        loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
        key = _key_path(loc)
        if err["type"] == "extra_forbidden":
            holder = _model_at(model, loc)
            valid = ", ".join(holder.model_fields) if holder else "see the schema"
            lines.append(f"{source}: {key}: unknown key; valid keys here: {valid}")
            continue
        message = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
        lines.append(f"{source}: {key}: {message}{shown}")
    return "invalid site config:\n  " + "\n  ".join(lines)
