"""The built wheel carries what an installed Launchkit serves (not just the source tree)."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_wheel_contains_packages_templates_static_files_and_hls_js(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--quiet", "-w", str(tmp_path)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = tmp_path.glob("launchkit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "launchkit/cli.py", "stream/encoder.py", "stream/packager/cmaf.py", "landing/app.py",
        "landing/templates/index.html", "landing/templates/embed.html",
        "landing/static/player.js", "landing/static/style.css", "landing/static/vendor/hls.light.min.js",
        # the operator's pages, beside the code that serves them
        "launchkit/origin/templates/ops.html", "launchkit/origin/templates/publish.html",
        "launchkit/origin/static/ops.js", "launchkit/origin/static/publish.js", "launchkit/origin/static/publish.css",
        "launchkit/wall/templates/wall_moderation.html", "launchkit/wall/static/wall-moderation.js",
    ):
        assert required in names, required
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "launchkit = launchkit.cli:main" in entry_points
