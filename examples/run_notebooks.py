"""Execute every notebook in examples/ (or those named) in a scratch folder; fail on error."""

import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).parent


def main(paths):
    for path in paths or sorted(HERE.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        with tempfile.TemporaryDirectory() as scratch:
            NotebookClient(nb, timeout=900, resources={"metadata": {"path": scratch}}).execute()
        print(f"executed {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
