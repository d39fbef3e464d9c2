"""Library noise in a log file: the progress bars of transformers, the hub and datasets are off where stderr is
not a terminal, whether the library is imported before or after `quiet_libraries`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CHECK = (
    "import sys\n{before}from minprot_ds.progress import quiet_libraries\nquiet_libraries()\n"
    "from datasets.utils.tqdm import are_progress_bars_disabled\n"
    "from huggingface_hub.utils import are_progress_bars_disabled as hub_disabled\n"
    "print(are_progress_bars_disabled(), hub_disabled())"
)


@pytest.mark.parametrize("before", ["", "import datasets\n"])
def test_progress_bars_are_off_in_a_log_file(before):
    env = {k: v for k, v in os.environ.items() if k != "HF_DATASETS_DISABLE_PROGRESS_BARS"}
    done = subprocess.run(
        [sys.executable, "-c", CHECK.format(before=before)], capture_output=True, text=True, env=env, check=True
    )
    assert done.stdout.split() == ["True", "True"], done.stderr


def test_a_users_own_setting_stays():
    env = {**os.environ, "HF_DATASETS_DISABLE_PROGRESS_BARS": "0"}
    done = subprocess.run(
        [sys.executable, "-c", CHECK.format(before="")], capture_output=True, text=True, env=env, check=True
    )
    assert done.stdout.split()[0] == "False", done.stderr
