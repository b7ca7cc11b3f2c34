"""The README's first code block runs as given, in a fresh process, and GD reaches EOS."""

import re
import subprocess
import sys
import time
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_first_example_runs_and_reaches_the_edge_of_stability(tmp_path):
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    seconds = time.perf_counter() - start
    assert out.returncode == 0, out.stderr[-2000:]
    assert "UserWarning" not in out.stderr, out.stderr[-2000:]  # a first run warns of nothing
    mean_sharpness = float(out.stdout.strip().splitlines()[-1])
    assert 1.9 <= mean_sharpness <= 2.2, mean_sharpness  # GD hovers at ηS = 2
    assert (tmp_path / "first_run.png").stat().st_size > 50_000
    # About 50 s on 2 idle cores; a generous bound that still catches a regression.
    assert seconds < 150, seconds
