"""benchmarks.quality_table keeps its finished runs in the repository (issue 16).

The runner's state folder lives on one machine; what a later session finds done
is what was published. These tests run no training: they publish hand-made
results and check the table made from them.
"""

import json

import numpy as np

from benchmarks import quality_table as qt


def _finished_job(folder, arm, seed, log_px):
    folder.mkdir(parents=True)
    np.save(folder / "log_px.npy", np.asarray(log_px, dtype=np.float64))
    result = {"arm": arm, "seed": seed, "epochs": 3, "train_seconds": 60.0, "train_loss": 1.0,
              "test_log_px": float(np.mean(log_px)), "test_elbo": -2.0, "active_units": [1],
              "eval_seconds": 60.0}
    (folder / "result.json").write_text(json.dumps(result))
    return result


def test_published_runs_make_the_table_and_count_as_done(tmp_path):
    state, results = tmp_path / "state", tmp_path / "results"
    rng = np.random.default_rng(0)
    base = rng.normal(-100.0, 3.0, size=50)
    for seed, shift in ((0, 0.5), (1, 0.25)):
        _finished_job(state / f"vae-s{seed}", "vae", seed, base + seed)
        _finished_job(state / f"iwae5-s{seed}", "iwae5", seed, base + seed + shift)
        assert qt.publish(str(state / f"vae-s{seed}"), str(results), "vae", seed)
        assert qt.publish(str(state / f"iwae5-s{seed}"), str(results), "iwae5", seed)
    assert not qt.publish(str(state / "vamp-s0"), str(results), "vamp", 0)  # nothing finished
    assert (results / "vae-s0.log_px.npy").exists()

    done = qt.collect(str(results), epochs=3)
    assert [(r["arm"], r["seed"]) for r, _ in done] == [("vae", 0), ("vae", 1), ("iwae5", 0),
                                                       ("iwae5", 1)]
    np.testing.assert_allclose(done[0][1], base, rtol=1e-6)  # stored as float32
    table = qt.render(done, 3)
    row = next(line for line in table.splitlines() if line.startswith("| IWAE k=5 minus"))
    # paired differences +0.50 and +0.25 (mean +0.38), and an image-level s.e. of 0 (a pure shift)
    assert "| 2 | +0.38 | +0.50 +0.25 | 0.12 | 0.00 |" in row, row

    # a published run is done for the runner: it is returned without touching the state folder
    again = qt.run_job("vae", 0, 3, None, None, str(tmp_path / "elsewhere"),
                       results_root=str(results))
    assert again["test_log_px"] == done[0][0]["test_log_px"]
    assert not (tmp_path / "elsewhere").exists()


def test_runs_without_per_image_values_say_so(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    for arm, seed, value in (("vae", 0, -236.37), ("vae", 1, -236.52), ("vamp", 0, -236.07),
                             ("vamp", 1, -236.02)):
        record = {"arm": arm, "seed": seed, "epochs": 100, "train_seconds": 60.0,
                  "train_loss": 1.0, "test_log_px": value, "test_elbo": -2.0,
                  "active_units": [7], "eval_seconds": 60.0}
        if arm == "vae":
            record["seed_means_only"] = ["test_elbo"]
        (results / f"{arm}-s{seed}.json").write_text(json.dumps(record))
    table = qt.render(qt.collect(str(results), epochs=100), 100)
    row = next(line for line in table.splitlines() if line.startswith("| VampPrior minus"))
    assert "| 2 | +0.40 | +0.30 +0.50 | 0.10 | - |" in row, row
    assert "Per-image values not kept for vae seed 0, vae seed 1, vamp seed 0" in table
    assert "For vae only the means over seeds" in table
