"""predict_file / `triage predict`: streaming CSV, JSONL, Parquet, CFPB files; errors as one line."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest
from _model_support import TEXTS, cli_error, cli_ok, make_model_folder

from ticket_triage.errors import DataError


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_model_dir):
    return make_model_folder(tmp_path_factory.mktemp("files") / "model", tiny_model_dir)


@pytest.fixture(scope="module")
def clf(model_dir):
    from ticket_triage import Classifier

    return Classifier.load(model_dir)


def frame(n=250, empty=(5, 77, 200)):
    texts = [TEXTS[i % len(TEXTS)] + f" number {i}" for i in range(n)]
    for i in empty:
        texts[i] = "   " if i % 2 else ""
    return pd.DataFrame(
        {
            "id": [f"t{i:04d}" for i in range(n)],
            "text": texts,
            "channel": ["web", "mail"] * (n // 2) + ["web"] * (n % 2),
        }
    )


def test_streams_a_file_larger_than_a_chunk(tmp_path, clf, monkeypatch):
    from ticket_triage.inference import predict_file
    from ticket_triage.inference.batch import EMPTY_TEXT_ERROR

    df = frame()
    src, dest = tmp_path / "in.csv", tmp_path / "out.csv"
    df.to_csv(src, index=False)
    sizes = []
    original = type(clf).predict_proba

    def spy(self, texts, batch_size=32):
        sizes.append(len(texts))
        return original(self, texts, batch_size)

    monkeypatch.setattr(type(clf), "predict_proba", spy)
    report = predict_file(clf, src, dest, batch_size=16, chunk_rows=64, progress=False)
    assert len(sizes) == 4 and max(sizes) <= 64, "the file is read and scored in chunks"
    assert (report.rows, report.errors, report.predicted, report.needs_review) == (250, 3, 247, None)
    assert report.text_column == "text" and report.rows_per_s > 0

    out = pd.read_csv(dest, keep_default_na=False, na_values=[""])
    assert list(out.columns) == [
        "id",
        "text",
        "channel",
        "category",
        "confidence",
        *[f"prob_{l}" for l in clf.labels],
        "error",
    ]
    assert out["id"].tolist() == df["id"].tolist(), "row order is kept"
    bad = out["error"].notna()
    assert out.index[bad].tolist() == [5, 77, 200]
    assert (out.loc[bad, "error"] == EMPTY_TEXT_ERROR).all() and out.loc[bad, "category"].isna().all()
    good = out[~bad]
    expected = clf.predict(df.loc[~bad, "text"].tolist())
    assert good["category"].tolist() == [p.category for p in expected]
    np.testing.assert_allclose(good["confidence"], [p.confidence for p in expected], atol=1e-6)
    probs = good[[f"prob_{l}" for l in clf.labels]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    assert not (tmp_path / "out.csv.partial").exists()


@pytest.mark.parametrize("src_ext,dest_ext", [("jsonl", "parquet"), ("parquet", "jsonl"), ("csv.gz", "parquet")])
def test_formats_and_abstention(tmp_path, clf, src_ext, dest_ext):
    from ticket_triage.inference import predict_file

    df = frame(90, empty=(3,))
    src, dest = tmp_path / f"in.{src_ext}", tmp_path / f"out.{dest_ext}"
    if src_ext == "jsonl":
        df.to_json(src, orient="records", lines=True)
    elif src_ext == "parquet":
        df.to_parquet(src)
    else:
        with gzip.open(src, "wt") as fh:
            df.to_csv(fh, index=False)
    report = predict_file(clf, src, dest, abstain_below=0.999, chunk_rows=40, progress=False)
    out = pd.read_parquet(dest) if dest_ext == "parquet" else pd.read_json(dest, lines=True)
    assert len(out) == 90 and out["id"].tolist() == df["id"].tolist()
    assert report.errors == 1 and out["error"].iloc[3] == "empty text"
    assert "needs_review" in out.columns and bool(out["needs_review"].iloc[0]) is True
    assert report.needs_review == 89


def test_cfpb_file_text_column_is_detected(tmp_path, clf, bundled_csv):
    from ticket_triage.inference import predict_file

    src = tmp_path / "cfpb.csv.gz"
    raw = pd.read_csv(bundled_csv, nrows=60, dtype=str)
    with gzip.open(src, "wt") as fh:
        raw.to_csv(fh, index=False)
    report = predict_file(clf, src, tmp_path / "o.jsonl", progress=False)
    assert report.text_column == "Consumer complaint narrative" and report.rows == 60
    first = json.loads((tmp_path / "o.jsonl").read_text().splitlines()[0])
    assert first["Product"] == raw["Product"].iloc[0] and first["category"] in clf.labels


def test_huge_rows_and_missing_values(tmp_path, clf, monkeypatch):
    import ticket_triage.inference.files as files
    from ticket_triage.inference import predict_file

    monkeypatch.setattr(files, "CSV_BLOCK_BYTES", 1 << 16)  # rows of 1 MB straddle 64 KB blocks
    huge = ("my credit report shows a debt " * 40000)[:1_000_000]
    df = pd.DataFrame({"n": range(6), "text": [huge, "loan\nwith a newline", "card", huge, "", "bank"]})
    df.to_csv(tmp_path / "huge.csv", index=False)
    report = predict_file(clf, tmp_path / "huge.csv", tmp_path / "o.parquet", chunk_rows=2, progress=False)
    out = pd.read_parquet(tmp_path / "o.parquet")
    assert (report.rows, report.errors) == (6, 1) and out["n"].astype(int).tolist() == list(range(6))
    assert out["category"].iloc[0] == clf.predict([huge])[0].category
    # Parquet nulls are empty texts (a first chunk of only errors still gives typed columns).
    pd.DataFrame({"text": [None, None, "credit card", None]}).to_parquet(tmp_path / "nulls.parquet")
    report = predict_file(clf, tmp_path / "nulls.parquet", tmp_path / "m.parquet", chunk_rows=2, progress=False)
    assert (report.rows, report.errors) == (4, 3)
    assert pd.read_parquet(tmp_path / "m.parquet")["category"].notna().tolist() == [False, False, True, False]


def test_bad_files_raise_data_errors(tmp_path, clf):
    from ticket_triage.inference import predict_file

    src = tmp_path / "in.csv"
    frame(10, empty=()).to_csv(src, index=False)
    with pytest.raises(DataError, match="no column 'body'"):
        predict_file(clf, src, tmp_path / "o.csv", text_column="body", progress=False)
    (tmp_path / "in.xlsx").write_text("x")
    with pytest.raises(DataError, match="unsupported input file type"):
        predict_file(clf, tmp_path / "in.xlsx", tmp_path / "o.csv", progress=False)
    with pytest.raises(DataError, match="unsupported output file type"):
        predict_file(clf, src, tmp_path / "o.txt", progress=False)
    with pytest.raises(DataError, match="does not exist"):
        predict_file(clf, tmp_path / "missing.csv", tmp_path / "o.csv", progress=False)
    pd.DataFrame({"body": ["a"]}).to_csv(tmp_path / "nocol.csv", index=False)
    with pytest.raises(DataError, match="--text-column"):
        predict_file(clf, tmp_path / "nocol.csv", tmp_path / "o.csv", progress=False)
    assert not (tmp_path / "o.csv").exists() and not (tmp_path / "o.csv.partial").exists()


def test_cli_predict(tmp_path, model_dir, capsys):
    src = tmp_path / "in.csv"
    frame(40, empty=(1,)).to_csv(src, index=False)
    cli_ok(
        [
            "predict",
            "--model",
            str(model_dir),
            "--input",
            str(src),
            "--out",
            str(tmp_path / "o.parquet"),
            "--abstain-below",
            "0.5",
            "--batch-size",
            "8",
        ]
    )
    assert "40 rows" in capsys.readouterr().out
    assert len(pd.read_parquet(tmp_path / "o.parquet")) == 40

    assert "does not exist" in cli_error(
        capsys, ["predict", "--model", str(tmp_path / "nope"), "--input", str(src), "--out", str(tmp_path / "o.csv")]
    )
    assert "no column 'body'" in cli_error(
        capsys,
        [
            "predict",
            "--model",
            str(model_dir),
            "--input",
            str(src),
            "--out",
            str(tmp_path / "o.csv"),
            "--text-column",
            "body",
        ],
    )
    (tmp_path / "in.docx").write_text("x")
    assert "unsupported input file type" in cli_error(
        capsys,
        ["predict", "--model", str(model_dir), "--input", str(tmp_path / "in.docx"), "--out", str(tmp_path / "o.csv")],
    )
    assert "abstain_below" in cli_error(
        capsys,
        [
            "predict",
            "--model",
            str(model_dir),
            "--input",
            str(src),
            "--out",
            str(tmp_path / "o.csv"),
            "--abstain-below",
            "2",
        ],
    )


def test_read_labelled_maps_products_and_stops_at_max_rows(tmp_path):
    """The labelled reader shared by calibrate and the export's F1 check: category names or raw
    CFPB products (through the taxonomy), rows it cannot use counted, `max_rows` honoured."""
    import pandas as pd

    from ticket_triage.inference.files import read_labelled
    from ticket_triage.taxonomy import load_taxonomy

    taxonomy = load_taxonomy("cfpb-6")
    labels = list(taxonomy.categories)
    raw = pd.DataFrame(
        {
            "Product": ["Debt collection", "Mortgage", "Not a product", "Mortgage", "Debt collection"],
            "Consumer complaint narrative": [
                "a collector calls",
                "escrow error",
                "what is this",
                "",
                "they keep calling",
            ],
        }
    )
    path = tmp_path / "cfpb.csv"
    raw.to_csv(path, index=False)
    texts, y, left_out = read_labelled(path, labels, taxonomy)
    assert texts == ["a collector calls", "escrow error", "they keep calling"]
    assert [labels[i] for i in y] == ["Debt Collection", "Mortgage", "Debt Collection"]
    assert left_out == 2  # the unknown product and the empty text
    texts, y, left_out = read_labelled(path, labels, taxonomy, max_rows=2)
    assert texts == ["a collector calls", "escrow error"] and left_out == 0


def test_predict_options_are_declared_once_and_a_misspelt_one_is_refused(tmp_path):
    from ticket_triage.inference import PredictOptions

    opts = PredictOptions.of(None, batch_size=4)
    assert opts.batch_size == 4 and opts.chunk_rows == PredictOptions().chunk_rows
    with pytest.raises(TypeError, match="batchsize"):
        PredictOptions.of(opts, batchsize=4)
