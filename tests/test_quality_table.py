"""benchmarks.quality_table keeps its finished runs in the repository (issue 16).

The runner's state folder lives on one machine; what a later session finds done
is what was published. These tests run no training: they publish hand-made
results and check the table made from them, and they check that
benchmarks/RESULTS.md's table and README.md's 2-layer numbers are the ones the
runs published in the repository give.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import quality_table as qt

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO / "benchmarks" / "quality_runs" / "e100"


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


def _unfinished_job(folder, passes, backup_epoch=None):
    (folder / "backup").mkdir(parents=True, exist_ok=True)
    rows = [{"epoch": e, "loss": 100.0 - e, "seconds": 1.0} for e in range(passes)]
    (folder / "epochs.json").write_text(json.dumps(rows))
    (folder / "backup" / "latest.weights.h5").write_bytes(b"weights after %d" % passes)
    (folder / "backup" / "latest.weights.h5.bkp").write_bytes(b"the twin")
    (folder / "backup" / "training_metadata.json").write_text(
        json.dumps({"epoch": passes if backup_epoch is None else backup_epoch, "batch": 0}))


def test_a_parked_run_continues_on_another_machine(tmp_path, monkeypatch):
    here, there, results = tmp_path / "here", tmp_path / "there", tmp_path / "results"
    _unfinished_job(here / "iwae50-s0", 23)
    where = {"date": "2026-12-02 22:00", "commit": "abc", "cpu": "AMD EPYC, 2 cores"}
    assert qt.park(str(here / "iwae50-s0"), str(results), "iwae50", 0, where=where) == (23, 0)
    parked = results / "parked" / "iwae50-s0"
    assert (parked / "backup" / "latest.weights.h5").read_bytes() == b"weights after 23"
    assert not (parked / "backup" / "latest.weights.h5.bkp").exists()  # the twin stays home
    assert json.loads((parked / "parks.json").read_text()) == [dict(where, passes=23, chunks=0)]
    assert qt.park(str(here / "vamp-s0"), str(results), "vamp", 0, where=where) is None
    table = qt.render([], 100, [("iwae50", 0), ("iwae50", 1)],
                      {("iwae50", 0): qt._progress(str(parked)), ("iwae50", 1): (0, 0)})
    assert "Not finished yet: iwae50 seed 0 (parked after 23 passes), iwae50 seed 1." in table

    # the epoch log and Keras's backup disagree (killed between the two writes): refuse
    _unfinished_job(here / "hiwae50-s0", 5, backup_epoch=6)
    with pytest.raises(RuntimeError, match="backup is after epoch 6 but 5 epochs"):
        qt.park(str(here / "hiwae50-s0"), str(results), "hiwae50", 0, where=where)

    seen = {}

    class Stop(Exception):
        pass

    def train(arm, seed, epochs, x_train, job_dir, log):
        seen["weights"] = (Path(job_dir) / "backup" / "latest.weights.h5").read_bytes()
        seen["passes"] = len(json.loads((Path(job_dir) / "epochs.json").read_text()))
        raise Stop

    monkeypatch.setattr(qt, "_train_kv", train)
    with pytest.raises(Stop):
        qt.run_job("iwae50", 0, 100, None, None, str(there / "iwae50-s0"), log=lambda m: None,
                   results_root=str(results))
    assert seen == {"weights": b"weights after 23", "passes": 23}

    # a state folder that has trained further keeps its own state
    _unfinished_job(there / "iwae50-s0", 30)
    with pytest.raises(Stop):
        qt.run_job("iwae50", 0, 100, None, None, str(there / "iwae50-s0"), log=lambda m: None,
                   results_root=str(results))
    assert seen["passes"] == 30

    # once the run is finished and published, the parked copy goes
    _finished_job(there / "done-iwae50-s0", "iwae50", 0, [-90.0, -91.0])
    assert qt.publish(str(there / "done-iwae50-s0"), str(results), "iwae50", 0)
    assert not parked.exists()


@pytest.mark.parametrize("arm", ["vae", "plain"])
def test_a_runner_killed_at_an_epoch_end_logs_every_epoch_once(tmp_path, monkeypatch, arm):
    """Killed just before or just after writing the epoch log (around Keras's backup or the
    plain arm's checkpoint), the resumed run's log has each epoch exactly once, and a park
    of the killed state agrees with its backup."""
    x = np.random.default_rng(0).uniform(size=(256, 28, 28, 1)).astype("float32")
    train = qt._train_plain if arm == "plain" else (lambda *a, **k: qt._train_kv(arm, *a, **k))
    real_end = qt._EpochLog.end

    class Killed(Exception):
        pass

    for when in ("before", "after"):
        job = tmp_path / when
        job.mkdir()

        def dying_end(self, epoch, loss, when=when):
            if epoch == 1 and when == "before":
                raise Killed
            real_end(self, epoch, loss)
            if epoch == 1:
                raise Killed

        monkeypatch.setattr(qt._EpochLog, "end", dying_end)
        with pytest.raises(Killed):
            train(0, 3, x, str(job), log=lambda m: None)
        logged = [r["epoch"] for r in json.loads((job / "epochs.json").read_text())]
        assert logged == ([0] if when == "before" else [0, 1])
        if arm != "plain" and when == "after":  # the log is ahead: that epoch is trained again
            meta = json.loads((job / "backup" / "training_metadata.json").read_text())
            assert meta["epoch"] == 1
            assert qt.park(str(job), str(tmp_path / "results"), "vae", 0, where={}) == (1, 0)
            parked = json.loads((tmp_path / "results" / "parked" / "vae-s0" / "epochs.json")
                                .read_text())
            assert [r["epoch"] for r in parked] == [0]
        monkeypatch.setattr(qt._EpochLog, "end", real_end)
        _, rows = train(0, 3, x, str(job), log=lambda m: None)
        assert [r["epoch"] for r in rows] == [0, 1, 2], when
        assert all(r["seconds"] > 0 for r in rows)


def test_an_epoch_log_behind_its_backup_gets_an_untimed_row(tmp_path):
    """A state written by the earlier runner (backup first, then the log) may be one row
    short; aligning it to the backup adds the row without a time instead of losing the
    pass, so the finished run still counts its epochs."""
    log = qt._EpochLog(str(tmp_path / "epochs.json"))
    log.rows = [{"epoch": e, "loss": 10.0 - e, "seconds": 2.0} for e in range(4)]
    log.align(6)
    assert [r["epoch"] for r in log.rows] == [0, 1, 2, 3, 4, 5]
    assert log.rows[4] == {"epoch": 4, "loss": None, "seconds": None}
    assert json.loads((tmp_path / "epochs.json").read_text()) == log.rows
    log.align(2)  # a log ahead of the backup: the later epochs are trained again
    assert [r["epoch"] for r in log.rows] == [0, 1]
    assert qt._train_summary(log.rows + [{"epoch": 2, "loss": None, "seconds": None}]) == \
        {"epochs": 3, "train_seconds": 4.0, "train_loss": 9.0, "untimed_passes": 1}


def test_results_md_holds_the_table_of_the_published_runs():
    _, body = qt.published_table(str(PUBLISHED), 100)
    text = (REPO / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    block = text.split("<!-- begin: quality-table -->")[1].split("<!-- end: quality-table -->")[0]
    assert body in block, ("benchmarks/RESULTS.md's quality table is not the published runs' "
                           "table: run python -m benchmarks.quality_table --report --write "
                           "benchmarks/RESULTS.md")


def test_readme_states_the_published_two_layer_numbers():
    done, _ = qt.published_table(str(PUBLISHED), 100)
    runs = {(r["arm"], r["seed"]): r for r, _ in done}

    def ll(arm, seed=None):
        seeds = (0, 1) if seed is None else (seed,)
        return float(np.mean([runs[arm, s]["test_log_px"] for s in seeds]))

    units = [runs["hvae-200-wu", s]["active_units"] for s in (0, 1)]
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = " ".join(readme.split("## Two stochastic layers")[1].split("\n## ")[0].split())
    claims = [
        f"ELBO {ll('hvae'):.2f} against {ll('vae'):.2f} for one layer",
        f"IWAE k=5 {ll('hiwae5'):.2f} against {ll('iwae5'):.2f}",
        f"k=50 reaches {ll('iwae50'):.2f} (+{ll('iwae50') - ll('iwae5'):.2f} over k=5",
        f"k=50 reach {ll('hiwae50'):.2f} over 2 seeds ({ll('hiwae50', 0):.2f} / "
        f"{ll('hiwae50', 1):.2f}; {ll('iwae50') - ll('hiwae50'):.2f} below one layer, "
        f"{ll('hiwae50') - ll('hiwae5'):.2f} above their k=5)",
        f"2-layer ELBO model to {ll('hvae-wu'):.2f}",
        f"gains {ll('hvae-200', 0) - ll('hvae', 0):.2f} nats on seed 0 ({ll('hvae-200', 0):.2f})",
        f"costs the one-layer model only {ll('vae', 0) - ll('vae-mc', 0):.2f} "
        f"(`analytic_kl=False`, {ll('vae-mc', 0):.2f})",
        f"reaches {ll('hvae-200-wu'):.2f} over 2 seeds ({ll('hvae-200-wu', 0):.2f} / "
        f"{ll('hvae-200-wu', 1):.2f})",
        f"{ll('hvae-200-wu') - ll('vae'):.2f} nats above the 1-layer VAE",
        f"{min(u[0] for u in units)}-{max(u[0] for u in units)} active units in z1, "
        f"{min(u[1] for u in units)}-{max(u[1] for u in units)} in z2",
        f"reaches {ll('hiwae5-200-wu'):.2f} ({ll('hiwae5-200-wu', 0):.2f} / "
        f"{ll('hiwae5-200-wu', 1):.2f}), **{ll('hiwae5-200-wu') - ll('iwae5'):.2f} nats above "
        f"the 1-layer IWAE k=5** and within {ll('iwae50') - ll('hiwae5-200-wu'):.2f} of the "
        f"1-layer k=50",
    ]
    missing = [c for c in claims if c not in section]
    assert not missing, f"README.md's 2-layer paragraph no longer says: {missing}"
