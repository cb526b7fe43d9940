"""`Classifier` pickles as its folder and load options, so Spark or Ray workers can each load it."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from _model_support import TEXTS, make_model_folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_model_dir):
    return make_model_folder(tmp_path_factory.mktemp("pickle") / "model", tiny_model_dir)


def test_pickle_round_trip_scores_the_same(model_dir):
    from ticket_triage import Classifier

    clf = Classifier.load(model_dir, backend="torch", threads=1, device="cpu")
    blob = pickle.dumps(clf)
    assert len(blob) < 2000, "the weights are not in the pickle: the worker loads the folder"
    again = pickle.loads(blob)
    assert (again.model_version, again.backend, again.precision, again.labels) == (
        clf.model_version,
        "torch",
        "fp32",
        clf.labels,
    )
    np.testing.assert_allclose(again.predict_proba(TEXTS), clf.predict_proba(TEXTS), atol=1e-6)


def test_a_fresh_worker_process_loads_a_pickled_classifier(model_dir, tmp_path):
    """What a Spark pandas UDF or a Ray task does: unpickle in another interpreter and score."""
    from ticket_triage import Classifier

    clf = Classifier.load(model_dir, backend="torch", device="cpu")
    (tmp_path / "clf.pkl").write_bytes(pickle.dumps(clf))
    code = "import pickle,sys,json; clf=pickle.load(open(sys.argv[1],'rb')); print(json.dumps([p.category for p in clf.predict(json.loads(sys.argv[2]))]))"
    import json

    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "clf.pkl"), json.dumps(TEXTS)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [p.category for p in clf.predict(TEXTS)]
