"""apps/pipeline.py across sittings: a resumed stage reports what an uninterrupted one
does, and a stage folder is only continued with the values it was started with."""

import json

import keras
import numpy as np
import pytest

from apps import data, pipeline
from lns_keras.callbacks import binary_signs

TINY = dict(
    dataset="fashion_mnist",
    model="fashion_net",
    train_limit=128,
    test_limit=64,
    batch_size=64,
    optimizer="adam",
    learning_rate=1e-2,
    export_tflite=False,
    verbose=0,
)


class _Interrupt(Exception):
    pass


class _InterruptAtEpochEnd(keras.callbacks.Callback):
    """Stop training at the end of `epoch` after metrics.csv has its row but before the
    backup holds the epoch: the worst moment, the epoch runs again when resumed."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise _Interrupt


def _interrupt_at_epoch_end(monkeypatch, epoch: int) -> None:
    callbacks = pipeline._Run._callbacks

    def with_interruption(self, *args, **kwargs):
        found = callbacks(self, *args, **kwargs)
        backup = next(
            i for i, c in enumerate(found) if isinstance(c, pipeline.AtomicBackupAndRestore)
        )
        return [*found[:backup], _InterruptAtEpochEnd(epoch), *found[backup:]]

    monkeypatch.setattr(pipeline._Run, "_callbacks", with_interruption)


@pytest.fixture
def fixed_data(monkeypatch):
    """The same batches in every epoch: neither shuffled nor augmented."""
    load = data.load

    def load_fixed(name, split, batch_size, **kwargs):
        kwargs.update(training=False, shuffle=False, drop_remainder=True)
        return load(name, split, batch_size, **kwargs)

    monkeypatch.setattr(data, "load", load_fixed)


@pytest.fixture(params=["fixed", "shuffled"])
def pipeline_data(request):
    """Fixed batches leave only what the backup must carry over; the real pipeline
    (a new order and new augmentations every epoch) must also give the resumed epochs
    the batches of the uninterrupted run."""
    if request.param == "fixed":
        request.getfixturevalue("fixed_data")
    return request.param


def test_resumed_stage_reports_what_an_uninterrupted_one_does(tmp_path, monkeypatch, pipeline_data):
    epochs = 3
    whole = pipeline.run(
        pipeline.TrainConfig(
            stage="baseline", model_dir=str(tmp_path / "whole"), epochs=epochs, **TINY
        )
    )["stages"]["baseline"]

    config = pipeline.TrainConfig(
        stage="baseline", model_dir=str(tmp_path / "cut"), epochs=epochs, **TINY
    )
    with monkeypatch.context() as patch:
        _interrupt_at_epoch_end(patch, epoch=1)
        with pytest.raises(_Interrupt):
            pipeline.run(config)
    stage_dir = tmp_path / "cut" / "baseline"
    backup = json.loads((stage_dir / "backup" / "training_metadata.json").read_text())
    assert backup["epoch"] == 1 and backup["seconds"] > 0
    cut = pipeline.run(config)["stages"]["baseline"]  # the same command again

    for key in ("loss", "accuracy", "val_accuracy", "flip_rate", "flip_rate_total"):
        assert len(cut["history"][key]) == epochs, key
        np.testing.assert_allclose(
            cut["history"][key], whole["history"][key], atol=1e-5, err_msg=key
        )
    assert cut["test_accuracy"] == pytest.approx(whole["test_accuracy"], abs=1e-6)
    assert cut["seconds"] > backup["seconds"]  # the first sitting's time is counted
    assert json.loads((stage_dir / "metrics.json").read_text())["history"] == cut["history"]

    # flip_rate_total is measured from the signs when training first began.
    keras.utils.set_random_seed(0)
    start = binary_signs(pipeline.models.fashion_net((28, 28, 1), 10, mode="bnn"))
    final = binary_signs(keras.models.load_model(stage_dir / "final.keras", safe_mode=True))
    changed = sum(int(np.sum(start[n] != final[n])) for n in final)
    total = sum(final[n].size for n in final)
    assert changed > 0
    assert cut["history"]["flip_rate_total"][-1] == pytest.approx(changed / total)


def _no_data(*args, **kwargs):
    raise AssertionError("data was loaded before the stage folders were checked")


def test_rerun_with_other_values_is_refused_before_any_work(tmp_path, monkeypatch):
    config = pipeline.TrainConfig(stage="baseline", model_dir=str(tmp_path), epochs=1, **TINY)
    first = pipeline.run(config)["stages"]["baseline"]
    stored = json.loads((tmp_path / "baseline" / "config.json").read_text())
    assert stored["epochs"] == 1 and stored["learning_rate"] == TINY["learning_rate"]

    with monkeypatch.context() as patch:
        patch.setattr(data, "load", _no_data)
        changed = dict(TINY, learning_rate=0.05)
        with pytest.raises(ValueError) as error:
            pipeline.run(
                pipeline.TrainConfig(stage="baseline", model_dir=str(tmp_path), epochs=2, **changed)
            )
        message = str(error.value)
        assert "finished 'baseline' stage" in message
        assert "--epochs=2 (that run: 1)" in message
        assert "--learning_rate=0.05 (that run: 0.01)" in message
        assert "--overwrite" in message and "--optimizer" not in message
        # The baseline of --stage=all is set by --baseline_epochs.
        with pytest.raises(ValueError, match=r"--baseline_epochs=2 \(that run: 1\)"):
            pipeline.run(
                pipeline.TrainConfig(
                    stage="all", model_dir=str(tmp_path), epochs=1, baseline_epochs=2, **TINY
                )
            )

    # Values that change how the run goes, not what it computes, do not count.
    how = dict(TINY, verbose=2, export_tflite=True)
    again = pipeline.run(
        pipeline.TrainConfig(
            stage="baseline",
            model_dir=str(tmp_path),
            epochs=1,
            jit_compile=True,
            strategy="one_device",
            **how,
        )
    )["stages"]["baseline"]
    assert again == first

    overwritten = pipeline.run(
        pipeline.TrainConfig(
            stage="baseline", model_dir=str(tmp_path), epochs=2, overwrite=True, **TINY
        )
    )["stages"]["baseline"]
    assert len(overwritten["history"]["loss"]) == 2
    assert json.loads((tmp_path / "baseline" / "config.json").read_text())["epochs"] == 2


def test_lns_stage_is_continued_only_with_its_lns_values_and_baseline(tmp_path, monkeypatch):
    baselines = []
    for seed in (0, 1):
        keras.utils.set_random_seed(seed)
        baselines.append(tmp_path / f"baseline{seed}.keras")
        pipeline.models.fashion_net((28, 28, 1), 10, mode="bnn").save(baselines[-1])
    lns = dict(TINY, stage="lns", model_dir=str(tmp_path / "run"), epochs=0, warm_start_epochs=0)
    pipeline.run(pipeline.TrainConfig(pretrained=str(baselines[0]), **lns))

    monkeypatch.setattr(data, "load", _no_data)
    with pytest.raises(ValueError, match=r"--alpha=0\.5 \(that run: 1\.0\)"):
        pipeline.run(pipeline.TrainConfig(pretrained=str(baselines[0]), alpha=0.5, **lns))
    with pytest.raises(ValueError, match=r"--pretrained \(another model than that run's\)"):
        pipeline.run(pipeline.TrainConfig(pretrained=str(baselines[1]), **lns))


def test_stage_folder_without_its_values_is_refused_or_overwritten(tmp_path, monkeypatch):
    stage_dir = tmp_path / "baseline"
    stage_dir.mkdir()
    (stage_dir / "checkpoint.keras").write_bytes(b"from an older version")
    config = dict(TINY, stage="baseline", model_dir=str(tmp_path), epochs=0)
    with monkeypatch.context() as patch:
        patch.setattr(data, "load", _no_data)
        with pytest.raises(ValueError, match="without its config.json"):
            pipeline.run(pipeline.TrainConfig(**config))
    assert (stage_dir / "checkpoint.keras").is_file()
    pipeline.run(pipeline.TrainConfig(overwrite=True, **config))  # 0 epochs: no checkpoint
    assert not (stage_dir / "checkpoint.keras").exists()
    assert (stage_dir / "config.json").is_file() and (stage_dir / "final.keras").is_file()
