"""Slurm hostlists both ways: examples Slurm prints, and properties over generated names."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpcorch.slurm.hostlists import compress_hostlist, expand_hostlist
from hpcorch.slurm.script import JobRequest, render_sbatch, request_from_script


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("cpu[1-2],gpu1", ("cpu1", "cpu2", "gpu1")),
        ("nid[001-003,7]", ("nid001", "nid002", "nid003", "nid7")),
        ("r[1-2]n[01-02]", ("r1n01", "r1n02", "r2n01", "r2n02")),
        ("r[1-2]n[01-02],login", ("r1n01", "r1n02", "r2n01", "r2n02", "login")),
        ("node[9-11]", ("node9", "node10", "node11")),
        ("c[1-2]-ib", ("c1-ib", "c2-ib")),
        ("gpu1", ("gpu1",)),
        ("", ()),
        ("(null)", ()),
        (None, ()),
    ],
)
def test_expand_examples(text: str | None, names: tuple[str, ...]) -> None:
    assert expand_hostlist(text) == names


def test_compress_examples() -> None:
    assert compress_hostlist(["gpu2", "gpu1"]) == "gpu[1-2]"
    assert compress_hostlist(["n01", "n02", "n03", "n10"]) == "n[01-03,10]"
    assert compress_hostlist(["r1n01", "r1n02", "r2n01", "r2n02"]) in (
        "r[1-2]n[01-02]",
        "r1n[01-02],r2n[01-02]",
    )
    assert compress_hostlist([]) == ""


def test_bad_hostlist_names_itself() -> None:
    with pytest.raises(ValueError, match=r"bad Slurm hostlist 'a\[1-'"):
        expand_hostlist("a[1-")


prefixes = st.sampled_from(["n", "gpu", "r1n", "c-", "nid", "x"])
suffixes = st.sampled_from(["", "-ib", "a"])
node_names = st.builds(
    lambda p, n, width, s: f"{p}{n:0{width}d}{s}",
    prefixes,
    st.integers(0, 150),
    st.integers(1, 4),
    suffixes,
)


@given(st.lists(node_names, max_size=40))
def test_expand_undoes_compress(names: list[str]) -> None:
    assert sorted(expand_hostlist(compress_hostlist(names))) == sorted(set(names))


@given(
    st.lists(st.integers(0, 30), min_size=1, max_size=6, unique=True),
    st.lists(st.integers(0, 30), min_size=1, max_size=6, unique=True),
    st.integers(1, 3),
)
def test_two_bracket_groups_are_a_product(racks: list[int], nodes: list[int], width: int) -> None:
    text = "r[{}]n[{}]".format(
        ",".join(str(r) for r in racks), ",".join(f"{n:0{width}d}" for n in nodes)
    )
    assert expand_hostlist(text) == tuple(f"r{r}n{n:0{width}d}" for r in racks for n in nodes)


@given(st.integers(0, 500), st.integers(0, 40), st.integers(1, 4))
def test_ranges_keep_their_padding(lo: int, span: int, width: int) -> None:
    hi = lo + span
    names = expand_hostlist(f"n[{lo:0{width}d}-{hi:0{width}d}]")
    assert names == tuple(f"n{i:0{width}d}" for i in range(lo, hi + 1))


def test_job_scripts_write_and_read_hostlists() -> None:
    req = JobRequest(command="true", nodelist=("gpu2", "gpu1"), exclude=("r[1-2]n01",))
    script = render_sbatch(req)
    assert "#SBATCH --nodelist=gpu[1-2]\n" in script
    assert "#SBATCH --exclude=r[1-2]n01\n" in script
    back = request_from_script(script)
    assert back.nodelist == ("gpu1", "gpu2")
    assert back.exclude == ("r1n01", "r2n01")


def test_job_request_refuses_what_is_not_a_node_name() -> None:
    with pytest.raises(ValueError, match="not Slurm node names"):
        JobRequest(command="true", nodelist=("gpu1;rm -rf ~",))
