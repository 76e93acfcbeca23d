"""What a newcomer's first commands write: `make serve` serves a working copy of the template (never the
package source), the README's tour writes into scratch/, and git ignores both."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_make_serve_runs_a_working_copy_of_the_template() -> None:
    makefile = (ROOT / "Makefile").read_text()
    app = re.search(r"^APP \?= (\S+)$", makefile, re.M)
    assert app and app.group(1).startswith(".monailabel/apps/"), "not the package source"
    recipe = makefile.split("\nserve:", 1)[1].split("\n\n", 1)[0]
    assert "apps --name $(TEMPLATE) --download --output $(APP)" in recipe
    assert "--if-empty" in recipe and "--overwrite" not in recipe
    ignored = (ROOT / ".gitignore").read_text().split()
    assert {"/.monailabel/", "/scratch/", "/studies/"} <= set(ignored)


def test_readme_tour_writes_into_scratch() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|python)\n(.*?)```", readme, flags=re.S)
    targets = []
    for block in blocks:
        for line in block.splitlines():
            if line.lstrip().startswith(("docker", "make", "#")):
                continue
            targets += re.findall(r"--(?:output|download) ([^-\s]\S*)", line)
            targets += re.findall(r"monailabel-client download \S+ (\S+)", line)
            targets += re.findall(r"\.save\(\"([^\"]+)\"\)", line)
    assert len(targets) >= 7, targets
    assert all(t.startswith("scratch/") for t in targets), targets
    # a second server beside `make serve` (50051) gets another port
    serve = [line for block in blocks for line in block.splitlines() if "start_server --app" in line]
    assert serve and all("--port" in line and "--port 50051" not in line for line in serve), serve
