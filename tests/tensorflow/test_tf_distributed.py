"""A compiled Keras model (sync BN) trains under MirroredStrategy on two logical CPU devices as on one
device over the whole global batch. See docs/distributed.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("_mirrored_worker.py")
TIMEOUT_S = 300  # a hung collective fails the test instead of blocking CI
TOL = 1e-5


@pytest.mark.slow
def test_mirrored_sync_bn_step_equals_one_device() -> None:
    # A fresh process: the two logical devices must be configured before TensorFlow initialises.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "OMP_NUM_THREADS": "1"}
    try:
        proc = subprocess.run([sys.executable, str(WORKER), "float64"], env=env, capture_output=True, text=True,
                              timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the MirroredStrategy run did not finish within {TIMEOUT_S}s")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    measured = json.loads(proc.stdout.strip().splitlines()[-1])
    print("max difference from the one-device run:", measured)
    # Each replica saw half the batch, so matching the one-device moving statistics on every
    # replica is the synchronisation at work.
    assert measured.pop("replica batch sizes") == [2, 2]
    assert all(d <= TOL for d in measured.values()), measured
