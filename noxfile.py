"""Sessions: tests, slow, demo, figures, notebooks, bench, lint."""

import glob

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session):
    """The default test suite (under ~10 minutes on 2 CPU cores)."""
    session.install("-e", ".[test]")
    session.run("pytest", "-q", "--durations=15", *session.posargs)


@nox.session
def slow(session):
    """Long-running tests, marked `slow`."""
    session.install("-e", ".[test]")
    session.run("pytest", "-q", "-m", "slow", *session.posargs)


@nox.session
def demo(session):
    """The main job on the built-in default: quartic toy and MLP with every flow."""
    session.install("-e", ".")
    session.run("flowode", "demo", "--outdir", "out", *session.posargs)


@nox.session
def figures(session):
    """Regenerate every PNG in paper_figures/."""
    session.install("-e", ".")
    for script in sorted(glob.glob("paper_figures/[!_]*.py")):
        session.run("python", script)


@nox.session
def notebooks(session):
    """Execute examples/*.ipynb top to bottom, so they cannot rot."""
    session.install("-e", ".", "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29", "pandas")
    session.run("python", "examples/run_notebooks.py", *session.posargs)


@nox.session
def bench(session):
    """Cost benchmarks; prints one table per benchmark."""
    session.install("-e", ".")
    for script in sorted(glob.glob("benchmarks/bench_*.py")):
        session.run("python", script, *session.posargs)


@nox.session
def lint(session):
    session.install("ruff")
    dirs = ("flowode", "tests", "benchmarks", "paper_figures", "examples")
    session.run("ruff", "check", *dirs, "noxfile.py")
    session.run("ruff", "format", "--check", *dirs, "noxfile.py")
