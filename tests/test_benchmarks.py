"""What the benchmark scripts compare is what they claim to compare (no timing here).

`benchmarks/larq_step.py` must time the same network in lns_keras and in larq, and
`benchmarks/slb_step.py` must count SLB's logits against the STE kernels of the same
layers. Speed itself is never asserted in a test: see `docs/benchmarks.md`.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest

from benchmarks import larq_step, slb_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_larq_step_check_builds_the_same_network_in_lns_keras_and_larq():
    # Two workers, lns_keras on Keras 3 and larq on tf.keras 2, build and compare.
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "larq_step.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    assert "274,042 parameters (272,474 trainable)" in result.stdout
    assert "same layers, weight shapes and parameter counts" in result.stdout


def _infos():
    layers = [["stem_conv", "Conv2D", [[3, 3, 3, 16]]], ["b_conv", "QuantConv2D", [[3, 3, 16, 16]]]]
    lns = {"framework": "lns_keras", "params": 2736, "trainable_params": 2736, "layers": layers}
    return {"lns_keras xla": lns, "larq xla": {**copy.deepcopy(lns), "framework": "larq"}}


def test_larq_step_compare_names_every_difference():
    infos = _infos()
    assert larq_step.compare(infos) == []
    infos["larq xla"]["layers"][1][2] = [[3, 3, 16, 32]]
    infos["larq xla"]["params"] = 5040
    problems = larq_step.compare(infos)
    assert len(problems) == 2
    assert "params: lns_keras 2736 != larq 5040" in problems[0]
    assert "b_conv" in problems[1]


@pytest.mark.parametrize("bits", slb_step.BITS)
def test_slb_step_counts_two_to_the_bits_logits_per_ste_weight(bits):
    infos = {
        slb_step.name(method, bits): {
            "memory": slb_step.memory(slb_step.build(method, bits), slb_step.dense(method, bits))
        }
        for method in slb_step.METHODS
    }
    slb = infos[slb_step.name("slb", bits)]["memory"]
    ste = infos[slb_step.name("ste", bits)]["memory"]
    assert ste["quantized_weights"][0] == 267_264  # ResNet-20's binary convs
    assert slb["quantized_weights"] == [2**bits * n for n in ste["quantized_weights"]]
    assert slb["dense"]["weights"] == [2**bits * n for n in ste["dense"]["weights"]]
    assert slb_step.memory_problems(infos, [bits]) == []
    # A layer whose logits are not 2^b per weight is reported by name.
    layer = next(iter(slb["quantized_layers"]))
    slb["quantized_layers"][layer]["weights"][0] += 1
    assert [layer in p for p in slb_step.memory_problems(infos, [bits])] == [True]


def test_larq_step_compare_leaves_the_float_control_out():
    # The control is plain Keras 3 (Conv2D where the BNN has QuantConv2D): not compared.
    infos = _infos()
    control = copy.deepcopy(infos["lns_keras xla"])
    control["framework"] = larq_step.CONTROL
    control["layers"][1][1] = "Conv2D"
    infos[larq_step.name(larq_step.CONTROL, True)] = control
    assert larq_step.compare(infos) == []


def test_larq_step_binarynet_is_larqs_example_and_its_float_control_has_the_same_weights():
    import keras

    import lns_keras

    bnn = keras.Model(
        *larq_step.binarynet(keras.layers, lns_keras.QuantConv2D, lns_keras.QuantDense)
    )
    # larq 0.14 builds 14,033,566 parameters for the same definition (--check prints it).
    assert bnn.count_params() == 14_033_566
    assert sum(isinstance(layer, lns_keras.QuantConv2D) for layer in bnn.layers) == 6
    assert bnn.get_layer("conv1").input_quantizer is None
    assert bnn.get_layer("conv2").input_quantizer is not None

    def floating(cls):
        def build(*args, **kwargs):
            for key in larq_step.QUANTIZER_ARGS:
                kwargs.pop(key, None)
            return cls(*args, **kwargs)

        return build

    control = keras.Model(
        *larq_step.binarynet(
            keras.layers, floating(keras.layers.Conv2D), floating(keras.layers.Dense)
        )
    )
    assert [w.shape for w in control.weights] == [w.shape for w in bnn.weights]
