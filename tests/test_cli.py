import jax
import pytest
import xarray as xr

from flowode.cli import main


def test_run_writes_netcdf_and_png(tmp_path, capsys):
    out, png = tmp_path / "q.nc", tmp_path / "q.png"
    rc = main(
        [
            "run",
            "--problem",
            "quartic",
            "--steps",
            "20",
            "--flows",
            "gd,gradient",
            "-o",
            str(out),
            "--plot",
            str(png),
        ]
    )
    assert rc == 0
    ds = xr.load_dataset(out, engine="h5netcdf")
    assert list(ds.flow.values) == ["gd", "midpoint", "gradient"]
    assert png.stat().st_size > 10_000
    assert "gradient" in capsys.readouterr().out
    # Called in-process, the CLI leaves JAX's settings alone: the on-disk cache of
    # compiled programs is only for the `flowode` program (it crashed a test process once).
    assert jax.config.jax_compilation_cache_dir in (None, "")


def test_unknown_problem_is_a_clean_error(capsys):
    assert main(["run", "--problem", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown problem 'nope'" in err and "Traceback" not in err


def test_unknown_flow_is_a_clean_error(capsys):
    assert main(["run", "--problem", "quartic", "--steps", "5", "--flows", "gd,bogus"]) == 2
    assert "Unknown flow 'bogus'" in capsys.readouterr().err


def test_run_with_adam(tmp_path, capsys):
    out = tmp_path / "a.nc"
    argv = ["run", "--problem", "quartic", "--steps", "10", "--optimizer", "adam"]
    rc = main(
        [*argv, "--lr", "0.01", "--beta2", "0.99", "--flows", "adam,gradient", "-o", str(out)]
    )
    assert rc == 0
    ds = xr.load_dataset(out, engine="h5netcdf")
    assert list(ds.flow.values) == ["adam", "midpoint", "gradient"]
    assert ds.attrs["optimizer_beta2"] == 0.99
    assert ds.attrs["threshold"] == pytest.approx(38.0, rel=1e-12)
    assert "edge of stability at λ₁(P⁻¹H) = 38" in capsys.readouterr().out


def test_hyperparameter_the_optimiser_lacks_is_a_clean_error(capsys):
    assert main(["run", "--problem", "quartic", "--steps", "5", "--beta", "0.9"]) == 2
    assert "--optimizer gd has no --beta" in capsys.readouterr().err


@pytest.mark.slow
def test_sweep_command_streams_members_and_draws_the_phase_diagram(tmp_path, capsys):
    out, png = tmp_path / "sw", tmp_path / "sw.png"
    argv = ["sweep", "--problem", "quartic", "--lr", "0.9,1.0", "--steps", "300", "--flows",
            "gd,gradient,rod", "--eig-every", "1", "-o", str(out), "--plot", str(png)]  # fmt: skip
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["seed0_lr0.nc", "seed0_lr1.nc"]
    assert png.stat().st_size > 20_000
    text = capsys.readouterr().out
    # At η = 1 GD self-stabilises on v² = 0.02 about a centre of sharpness 2.06, where the
    # rod's centre and GD's midpoint (the column GD is shown in) sit.
    row = next(line for line in text.splitlines() if line.strip().startswith("1 "))
    mid_sharpness, rod_sharpness = float(row.split()[1]), float(row.split()[5])
    assert abs(rod_sharpness - 2.06) < 0.01 and abs(mid_sharpness - 2.06) < 0.02, row
    assert main(["sweep", "--problem", "quartic", "--lr", "1", "--seeds", "2"]) == 2
    assert "has no seed" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sweep", "--problem", "quartic", "--lr", "0.5,-1"])
