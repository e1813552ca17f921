"""The HTML report in a real browser: headless Chromium draws the Gantt chart.

The screenshots stay in test-artifacts/ (git-ignored) for a person to look at.
Chromium is a test requirement (``apt-get install -y chromium``, as
scripts/bootstrap does): without it these tests fail, they never skip.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from hpcorch.report import build_report, render_html
from hpcorch.report.gantt import COLOURS
from hpcorch.sites.loader import load_site
from tests.unit.test_report_build import dev_decls, dev_status

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("headless Chromium not found: apt-get install -y chromium", pytrace=False)


def browse(page: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium on a local file, with nothing reaching the network."""
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.iterdir()))}"
    argv = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1200,900",
        *args,
        page.resolve().as_uri(),
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True)


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)]) / 255


def colour_share(png: Path, hex_colour: str) -> float:
    """Share of the screenshot's pixels within a small distance of ``hex_colour``."""
    import matplotlib.image  # noqa: PLC0415  # optional plotting dependency

    pixels = matplotlib.image.imread(png)[..., :3]
    return float((np.abs(pixels - _rgb(hex_colour)).max(axis=-1) < 0.04).mean())


def check_page_in_browser(page: Path, tmp_path: Path, shot_name: str) -> Path:
    """DOM has the Gantt; the screenshot shows its bars. Returns the screenshot path."""
    dom = browse(page, tmp_path, "--dump-dom").stdout
    assert '<figure id="gantt"' in dom
    figure = dom[dom.index('<figure id="gantt"') :]
    assert figure.index("<svg") < figure.index("</figure>")
    assert "seconds since run start" in figure
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / shot_name
    shot.unlink(missing_ok=True)
    browse(page, tmp_path, f"--screenshot={shot}")
    assert shot.stat().st_size > 10_000
    # Succeeded attempts are drawn in their own green: the bars are on screen.
    assert colour_share(shot, COLOURS["succeeded"]) > 0.005
    return shot


def test_gantt_of_a_failed_dev_run_renders_in_chromium(tmp_path: Path) -> None:
    report = build_report(dev_status(), sites={"dev": load_site("dev")}, decls=dev_decls())
    page = tmp_path / "report.html"
    page.write_text(render_html(report))
    shot = check_page_in_browser(page, tmp_path, "report-dev-fixture.png")
    # Failed attempts show too, in their failure class's colour.
    assert colour_share(shot, COLOURS["out_of_memory"]) > 0.0005
