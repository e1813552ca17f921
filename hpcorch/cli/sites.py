"""``hpcorch sites``: list, show, validate, detect, schema, import-jobqueue."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from hpcorch.errors import SiteConfigError
from hpcorch.sites import list_sites, load_site, schema_text, site_from_jobqueue
from hpcorch.units import format_duration, format_memory

__all__ = ["sites"]


@click.group()
def sites() -> None:
    """Site configurations: what hpcorch knows about each cluster.

    \b
    Examples:
      hpcorch sites list
      hpcorch sites show dev
      hpcorch sites validate mysite.yaml
      hpcorch sites detect --name mycluster > mycluster.yaml
    """


@sites.command("list")
def list_cmd() -> None:
    """List the sites found ($HPCORCH_SITE_PATH, ~/.config/hpcorch/sites, shipped).

    \b
    Example:
      hpcorch sites list
    """
    table = Table("site", "kind", "partitions", "file")
    for name, path in sorted(list_sites().items()):
        try:
            site = load_site(path)
        except SiteConfigError:
            table.add_row(name, "[red]invalid[/red]", "-", str(path))
            continue
        parts = ", ".join(
            f"{p.name}({p.nodes}x{p.node.cores}c{f'+{p.node.gpus}g' if p.node.gpus else ''})"
            for p in site.partitions
        )
        table.add_row(name, site.kind, parts, str(path))
    Console().print(table)


@sites.command()
@click.argument("name")
def show(name: str) -> None:
    """Show one site: partitions, node shapes, limits, how Slurm is reached.

    \b
    Example:
      hpcorch sites show dev
    """
    from hpcorch.sites.detect import site_to_yaml  # noqa: PLC0415  # CLI fast path: --help does not load it

    site = load_site(name)
    console = Console()
    console.print(f"[bold]{site.name}[/bold] ({site.kind}) {site.description or ''}")
    table = Table("partition", "nodes", "sockets x cores", "memory", "GPUs", "max walltime")
    for p in site.partitions:
        gpus = f"{p.node.gpus} {p.node.gpu_type or ''}".strip() if p.node.gpus else "-"
        walltime = format_duration(p.max_walltime_s) if p.max_walltime_s else "-"
        name_cell = p.name + (" (default)" if p.default else "")
        shape = f"{p.node.sockets} x {p.node.cores_per_socket}"
        table.add_row(name_cell, str(p.nodes), shape, format_memory(p.node.memory), gpus, walltime)
    console.print(table)
    click.echo(site_to_yaml(site), nl=False)


@sites.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def validate(file: Path) -> None:
    """Check a site file; exit 2 naming the file, the key and what was expected.

    \b
    Example:
      hpcorch sites validate site-configs/dev.yaml
    """
    # Errors propagate to hpcorch.cli.main, which prints them and exits 2.
    site = load_site(file if file.suffix else Path(f"./{file}"))
    click.echo(f"{file}: ok (site {site.name!r}, {len(site.partitions)} partitions)")


@sites.command()
@click.option("--name", help="name for the new site (default: Slurm's ClusterName)")
@click.option("--conf", help="slurm.conf of the cluster (default: $SLURM_CONF)")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="write here")
def detect(name: str | None, conf: str | None, output: Path | None) -> None:
    """Build a site config from the live cluster (partitions, node shapes, GPUs, affinity).

    \b
    Example:
      hpcorch sites detect --name mycluster > mycluster.yaml
    """
    from hpcorch.sites.detect import detect_site, site_to_yaml  # noqa: PLC0415  # CLI fast path: --help does not load it

    text = site_to_yaml(detect_site(name=name, conf=conf))
    if output:
        output.write_text(text)
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


@sites.command()
def schema() -> None:
    """Print the JSON Schema of site files (as in site-configs/schema.json).

    \b
    Example:
      hpcorch sites schema > site-configs/schema.json
    """
    click.echo(schema_text(), nl=False)


@sites.command("import-jobqueue")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--name", default="jobqueue", show_default=True)
def import_jobqueue(file: Path | None, name: str) -> None:
    """Turn a dask-jobqueue `jobqueue.slurm` config (FILE or the dask config) into a site.

    \b
    Example:
      hpcorch sites import-jobqueue ~/.config/dask/jobqueue.yaml --name mycluster
    """
    from hpcorch.sites.detect import site_to_yaml  # noqa: PLC0415  # CLI fast path: --help does not load it

    site = site_from_jobqueue(file, name=name)
    click.echo(site_to_yaml(site), nl=False)
