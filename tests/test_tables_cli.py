"""`keras-vae train/impute/score` on CSV tables: the round trip in user units, bad CSVs, outputs."""

import csv
import os

import numpy as np
import pytest

from keras_vae import cli

COLOURS = ("blue", "green", "red")


def _table_text(n=120, seed=0, holes=0.0):
    """height (cm), weight (kg, ~ height), smoker 0/1, colour text; `holes` of cells empty."""
    rng = np.random.default_rng(seed)
    height = rng.normal(172, 9, n)
    weight = 0.9 * (height - 100) + rng.normal(0, 4, n)
    smoker = rng.random(n) < 0.3
    colour = rng.integers(0, 3, n)
    lines = ["height,weight,smoker,colour"]
    for i in range(n):
        cells = [f"{height[i]:.1f}", f"{weight[i]:.2f}", str(int(smoker[i])), COLOURS[colour[i]]]
        cells = ["" if rng.random() < holes else c for c in cells]
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


def _run(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("table_run")
    data = folder / "train.csv"
    data.write_text(_table_text(200, seed=0, holes=0.05))
    run = str(folder / "run")
    code = cli.main(["train", run, "--data", str(data), "--epochs", "3", "--latent-dim", "2",
                     "--hidden", "16", "--batch-size", "32", "--eval-samples", "8",
                     "--no-export", "--no-web", "--no-jit-compile", "--quiet"])
    assert code == 0
    return folder, run


def test_train_impute_round_trip_in_user_units(trained, capsys):
    folder, run = trained
    assert not os.path.exists(os.path.join(run, "plots"))
    holes = folder / "holes.csv"
    holes.write_text("height,weight,smoker,colour\n"
                     "180.0,,1,red\n"
                     ",55.5,,\n"
                     "165.25,60,0,NaN\n")
    out = folder / "filled.csv"
    code, stdout, err = _run(["impute", run, "--data", str(holes), "--out", str(out)], capsys)
    assert code == 0, err
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["height", "weight", "smoker", "colour"]
    assert rows[1][0] == "180.0" and rows[1][2:] == ["1", "red"]    # observed: as written
    assert rows[2][1] == "55.5" and rows[3][:3] == ["165.25", "60", "0"]
    assert 50 < float(rows[1][1]) < 110                               # weight in kg
    assert 140 < float(rows[2][0]) < 200                              # height in cm
    assert rows[2][2] in ("0", "1") and rows[2][3] in COLOURS and rows[3][3] in COLOURS
    # Multiple imputation: M copies, observed cells identical in each.
    out_m = folder / "filled_m.csv"
    code, _, err = _run(["impute", run, "--data", str(holes), "--out", str(out_m),
                         "--multiple", "3"], capsys)
    assert code == 0, err
    rows_m = list(csv.reader(out_m.open()))
    assert rows_m[0][0] == "imputation" and len(rows_m) == 1 + 3 * 3
    assert [r[0] for r in rows_m[1:]] == ["1"] * 3 + ["2"] * 3 + ["3"] * 3
    assert all(r[1] == "180.0" and r[4] == "red" for r in rows_m[1::3])


def test_score_writes_one_score_per_row(trained, capsys):
    folder, run = trained
    rows = folder / "rows.csv"
    rows.write_text("height,weight,smoker,colour\n170,63,0,blue\n230,10,1,green\n")
    out = folder / "scores.csv"
    code, _, err = _run(["score", run, "--data", str(rows), "--out", str(out),
                         "--num-samples", "16"], capsys)
    assert code == 0, err
    got = list(csv.reader(out.open()))
    assert got[0] == ["row", "score"] and [r[0] for r in got[1:]] == ["1", "2"]
    assert float(got[2][1]) > float(got[1][1])   # the 2.3 m, 10 kg row is the anomaly


def test_outputs_never_replace_the_input_or_an_existing_file(trained, capsys):
    folder, run = trained
    holes = folder / "h2.csv"
    holes.write_text("height,weight,smoker,colour\n180,,1,red\n")
    before = holes.read_bytes()
    link = folder / "link.csv"
    link.symlink_to(holes)
    for out, flags in ((holes, ["--overwrite"]), (link, ["--overwrite"])):
        code, _, err = _run(["impute", run, "--data", str(holes), "--out", str(out)] + flags,
                            capsys)
        assert code == 2 and "never writes over its input" in err and err.count("\n") == 1
    assert holes.read_bytes() == before
    complete = folder / "complete.csv"
    complete.write_text("height,weight,smoker,colour\n180,70,1,red\n")
    existing = folder / "exists.csv"
    existing.write_text("keep")
    code, _, err = _run(["score", run, "--data", str(complete), "--out", str(existing)], capsys)
    assert code == 2 and "pass --overwrite" in err and existing.read_text() == "keep"
    code, _, err = _run(["score", run, "--data", str(complete), "--out", str(existing),
                         "--overwrite"], capsys)
    assert code == 0 and existing.read_text().startswith("row,score")
    assert not [f for f in os.listdir(folder) if f.startswith(".tmp-")]


def test_impute_refuses_other_columns_and_unknown_categories(trained, capsys):
    folder, run = trained
    for text, message in (("height,colour\n1,red\n", "expected the columns"),
                          ("height,weight,smoker,colour\n170,60,0,purple\n",
                           "data row 1, column 'colour': 'purple' is not one of"),
                          ("height,weight,smoker,colour\n170,60,2,red\n",
                           "column 'smoker': the column is binary")):
        bad = folder / "bad_in.csv"
        bad.write_text(text)
        code, _, err = _run(["impute", run, "--data", str(bad), "--out",
                             str(folder / "never.csv")], capsys)
        assert code == 2 and message in err and err.count("\n") == 1
        assert not (folder / "never.csv").exists()


@pytest.mark.parametrize("text, message", [
    ("a,b\n1,2\n3\n", "1 cells, but the header has 2 columns"),
    ("a,b\n1,2\n3,x\n", "holds numbers but data row 2 holds text 'x'"),
    ("a,b\n1,\n3,\n", "column 'b' has no observed value"),
    ("a,b\n", "no data rows"),
])
def test_train_on_a_bad_csv_is_one_line_and_exit_2(tmp_path, capsys, text, message):
    data = tmp_path / "bad.csv"
    data.write_text(text)
    run = tmp_path / "run"
    code, _, err = _run(["train", str(run), "--data", str(data), "--epochs", "1"], capsys)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not run.exists()


def test_miwae_table_run_trains_on_holes_imputes_and_scores_rows_with_holes(tmp_path, capsys):
    """`--objective miwae` keeps the incomplete rows, imputes by importance sampling (valid
    categories and binary values, observed cells as written) and scores rows with holes."""
    data = tmp_path / "train.csv"
    data.write_text(_table_text(200, seed=1, holes=0.2))
    run = str(tmp_path / "run")
    code, out, err = _run(["train", run, "--data", str(data), "--objective", "miwae",
                           "--num-samples", "5", "--epochs", "3", "--latent-dim", "2",
                           "--hidden", "16", "--batch-size", "32", "--eval-samples", "8",
                           "--no-export", "--no-web", "--no-jit-compile", "--quiet"], capsys)
    assert code == 0, err
    assert "left out" not in out + err                      # no incomplete row was dropped
    holes = tmp_path / "holes.csv"
    holes.write_text("height,weight,smoker,colour\n180.0,,1,\n,55.5,,blue\n")
    filled = tmp_path / "filled.csv"
    code, _, err = _run(["impute", run, "--data", str(holes), "--out", str(filled)], capsys)
    assert code == 0, err
    rows = list(csv.reader(filled.open()))
    assert rows[1][0] == "180.0" and rows[1][2] == "1" and rows[2][1:] != ["", "", ""]
    assert rows[2][1] == "55.5" and rows[2][3] == "blue"
    assert rows[1][3] in COLOURS and rows[2][2] in ("0", "1")
    assert 30 < float(rows[1][1]) < 130 and 120 < float(rows[2][0]) < 220
    # The numeric cells are the importance-sampling estimate E[x_m | x_o] of kv.impute.
    import keras

    import keras_vae as kv
    from keras_vae import runs
    model = keras.models.load_model(os.path.join(run, "model.keras"))
    x = np.array([[180.0, np.nan, 1.0, np.nan], [np.nan, 55.5, np.nan, 0.0]], np.float32)
    expected = kv.impute(model, x, method="importance", num_samples=runs.IMPUTE_SAMPLES)
    np.testing.assert_allclose(float(rows[1][1]), expected[0, 1], rtol=1e-4)
    np.testing.assert_allclose(float(rows[2][0]), expected[1, 0], rtol=1e-4)
    scores = tmp_path / "scores.csv"
    code, _, err = _run(["score", run, "--data", str(holes), "--out", str(scores),
                         "--num-samples", "16"], capsys)
    assert code == 0, err
    got = list(csv.reader(scores.open()))
    assert len(got) == 3 and all(np.isfinite(float(r[1])) for r in got[1:])


def test_most_frequent_value_per_cell():
    from keras_vae.runs import _most_frequent
    draws = np.array([[[0.0, 2.0]], [[1.0, 2.0]], [[1.0, 0.0]], [[2.0, 0.0]], [[1.0, 2.0]]])
    np.testing.assert_array_equal(_most_frequent(draws), [[1.0, 2.0]])
    np.testing.assert_array_equal(_most_frequent(np.array([[[3.0]], [[1.0]]])), [[1.0]])
