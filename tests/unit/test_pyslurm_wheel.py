"""scripts/pyslurm-wheel's pure parts: which Slurm a root has, which vendored source fits it."""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "pyslurm-wheel"


def load(monkeypatch: pytest.MonkeyPatch, vendor: Path) -> ModuleType:
    monkeypatch.setenv("HPCORCH_VENDOR_DIR", str(vendor))
    loader = importlib.machinery.SourceFileLoader("pyslurm_wheel", str(SCRIPT))
    spec = importlib.util.spec_from_loader("pyslurm_wheel", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def fake_root(tmp_path: Path, version_number: str) -> Path:
    header = tmp_path / "root/usr/include/slurm/slurm_version.h"
    header.parent.mkdir(parents=True)
    header.write_text(f"#define SLURM_VERSION_NUMBER {version_number}\n")
    (tmp_path / "root/usr/bin").mkdir(parents=True)
    (tmp_path / "root/usr/bin/python3.13").touch()
    return tmp_path / "root"


def test_the_roots_release_and_python_pick_the_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vendor = tmp_path / "vendor"
    vendor.mkdir()
    (vendor / "pyslurm-24.11.x-2adb2da.tar.gz").touch()
    wheel = load(monkeypatch, vendor)
    root = fake_root(tmp_path, "0x180b05")
    assert wheel.slurm_release(root) == "24.11.5"
    assert wheel.python_tag(root) == "cp313"
    assert wheel.source_for("24.11.5").name == "pyslurm-24.11.x-2adb2da.tar.gz"


def test_no_source_for_the_release_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    wheel = load(monkeypatch, tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        wheel.source_for("26.05.5")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "no pyslurm source for Slurm 26.05" in err and err.count("\n") == 1
