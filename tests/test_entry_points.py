"""apps/train_imagenet.py and apps/train_cifar10.py: apps/train.py with the dataset fixed."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow_datasets as tfds

from apps import train, train_cifar10, train_imagenet

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "apps" / "configs"
ENTRY_POINTS = {"train_imagenet.py": train_imagenet, "train_cifar10.py": train_cifar10}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    return env


def test_helpfull_lists_train_flags_with_the_dataset_fixed():
    # Both at once: most of each run is importing TensorFlow.
    processes = {
        script: subprocess.Popen(
            [sys.executable, str(ROOT / "apps" / script), "--helpfull"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        for script in ENTRY_POINTS
    }
    for script, process in processes.items():
        stdout, stderr = process.communicate(timeout=240)
        assert process.returncode == 0, stderr[-2000:]
        dataset = ENTRY_POINTS[script].DATASET
        for flag in ("--flagfile:", "--stage:", "--alpha:", "--[no]overwrite:", "--verbosity:"):
            assert flag in stdout, (script, flag)
        assert f"Fixed to {dataset} here" in stdout
        assert f"(default: '{dataset}')" in stdout


@pytest.mark.parametrize("script", ENTRY_POINTS)
def test_another_dataset_is_refused_in_one_line(tmp_path, capsys, script):
    train.FLAGS.unparse_flags()
    try:
        train.FLAGS([script, "--dataset=fashion_mnist", f"--model_dir={tmp_path / 'run'}"])
        code = train.main([script], dataset=ENTRY_POINTS[script].DATASET)
    finally:
        train.FLAGS.unparse_flags()
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: --dataset='fashion_mnist' is invalid: ")
    assert f"{script} trains on {ENTRY_POINTS[script].DATASET} only" in lines[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_imagenet_recipe_runs_a_step_on_mock_data(tmp_path, capsys):
    """The ResNet-18 LNS recipe through apps/train_imagenet.py, its baseline stage cut to
    one step of two 224x224 images on tfds's mock ImageNet (about 30 s on 2 CPU cores)."""
    argv = [
        f"--flagfile={CONFIGS / 'imagenet_resnet18_lns.flags'}",
        "--stage=baseline",
        f"--model_dir={tmp_path}",
        "--epochs=1",
        "--train_limit=2",
        "--test_limit=2",
        "--batch_size=2",
        "--export_tflite=false",
        "--verbose=2",
    ]
    train.FLAGS.unparse_flags()
    try:
        train.FLAGS(["train_imagenet.py", *argv])
        assert (train.FLAGS.dataset, train.FLAGS.model) == ("imagenet2012", "resnet18_bireal")
        with tfds.testing.mock_data(num_examples=4):
            code = train.main(["train_imagenet.py"], dataset=train_imagenet.DATASET)
    finally:
        train.FLAGS.unparse_flags()
    out = capsys.readouterr().out
    assert code == 0
    assert "== Stage: baseline (1 epoch) ==" in out
    assert "1/1 - " in out  # the one step, as one line
    assert (tmp_path / "baseline" / "final.keras").is_file()
