"""Our own versions of the test helpers larq's tests import, for Keras 3.

larq's tests take them from `larq.testing_utils` (and `get_test_data` from TensorFlow's
private Keras 2 testing utilities); the ported tests take them from here. Each does
what its name says in Keras 3 terms: `layer_test` builds, runs, serializes and trains a
layer the ways a user would (functional model, `Sequential` with the layer first,
`from_config`, `train_on_batch`) and returns its output.
"""

from __future__ import annotations

import keras
import numpy as np

from lns_keras.layers import QuantDense


def generate_real_values_with_zeros(low=-2, high=2, shape=(4, 10)) -> np.ndarray:
    """Uniform values in [low, high) of `shape`, with an extra column of zeros at index 1."""
    values = np.random.uniform(low, high, shape)
    return np.insert(values, 1, 0.0, axis=1)


def _concrete(shape) -> list[int]:
    return [np.random.randint(1, 4) if dim is None else dim for dim in shape]


def random_input(shape) -> np.ndarray:
    """float32 values in [-0.5, 9.5) of `shape` (an unknown dimension gets 1 to 3)."""
    return (10 * np.random.random(_concrete(shape)) - 0.5).astype("float32")


def evaluate(tensors):
    """The NumPy values of a (nested) structure of tensors or variables."""
    return keras.tree.map_structure(
        lambda t: None if t is None else keras.ops.convert_to_numpy(t), tensors
    )


def get_small_bnn_model(input_dim, num_hidden, output_dim, trainable_bn=True) -> keras.Model:
    """Binary dense -> batch normalization -> binary dense with softmax, no biases."""
    return keras.Sequential(
        [
            keras.Input((input_dim,)),
            QuantDense(
                num_hidden,
                kernel_quantizer="ste_sign",
                kernel_constraint="weight_clip",
                activation="relu",
                use_bias=False,
            ),
            keras.layers.BatchNormalization(trainable=trainable_bn),
            QuantDense(
                output_dim,
                input_quantizer="ste_sign",
                kernel_quantizer="ste_sign",
                kernel_constraint="weight_clip",
                activation="softmax",
                use_bias=False,
            ),
        ]
    )


def get_test_data(train_samples, test_samples, input_shape, num_classes, random_seed=None):
    """A separable classification problem: noisy copies of one random template a class.

    Returns:
        `((x_train, y_train), (x_test, y_test))`, labels as integers.
    """
    if random_seed is not None:
        np.random.seed(random_seed)
    n = train_samples + test_samples
    templates = 2 * num_classes * np.random.random((num_classes, *input_shape))
    y = np.random.randint(0, num_classes, size=(n,))
    x = templates[y] + np.random.normal(size=(n, *input_shape))
    return (x[:train_samples], y[:train_samples]), (x[train_samples:], y[train_samples:])


def _check_shape(layer_cls, expected, actual, when: str) -> None:
    for want, got in zip(expected, actual, strict=True):
        if want is not None and want != got:
            raise AssertionError(
                f"{layer_cls.__name__} {when}: output shape {actual}, expected {tuple(expected)}."
            )


def _predict(model, input_data) -> np.ndarray:
    # An inference call, as `predict` makes, without tracing a predict function for
    # each of the many small models (the training step below is compiled).
    return keras.ops.convert_to_numpy(model(input_data, training=False))


def _check_recovered(model, recovered, input_data, output) -> None:
    """`recovered` (rebuilt from `model`'s config) with `model`'s weights predicts `output`."""
    if model.weights:
        recovered.set_weights(model.get_weights())
        np.testing.assert_allclose(_predict(recovered, input_data), output, rtol=2e-3)


def layer_test(
    layer_cls,
    kwargs=None,
    input_shape=None,
    input_dtype=None,
    input_data=None,
    expected_output=None,
    expected_output_dtype=None,
    should_run_eagerly=False,
):
    """Run a single-input, single-output layer every way a user would; return its output.

    The layer is made from `kwargs`; its weights survive `get_weights`/`set_weights`; in
    a functional model its output has `expected_output_dtype` (default: the input's) and
    the shape its `compute_output_shape` promises (and equals `expected_output` if
    given); the model rebuilt from its config predicts the same with the same weights;
    a fresh layer trains one batch (`train_on_batch`, `run_eagerly=should_run_eagerly`);
    and a layer rebuilt from its config runs first in a `Sequential` model with the same
    results.

    Args:
        layer_cls: The layer class.
        kwargs: Its arguments.
        input_shape: The input's shape (`None` dimensions get 1 to 3), unless
            `input_data` is given.
        input_dtype: The input's dtype (default float32).
        input_data: The input, instead of random data.
        expected_output: The output expected, if known.
        expected_output_dtype: The output's dtype expected (default: the input's).
        should_run_eagerly: Whether the training step runs eagerly.

    Returns:
        The output of the `Sequential` model (NumPy).

    Raises:
        ValueError: If neither `input_shape` nor `input_data` is given.
        AssertionError: If a check fails.
    """
    if input_data is None:
        if input_shape is None:
            raise ValueError("layer_test needs input_shape or input_data, got neither.")
        input_dtype = input_dtype or "float32"
        input_data = 10 * np.random.random(_concrete(input_shape))
        if input_dtype.startswith("float"):
            input_data -= 0.5
        input_data = input_data.astype(input_dtype)
    elif input_shape is None:
        input_shape = input_data.shape
    input_dtype = input_dtype or keras.backend.standardize_dtype(input_data.dtype)
    expected_output_dtype = expected_output_dtype or input_dtype
    kwargs = kwargs or {}

    layer = layer_cls(**kwargs)
    layer.set_weights(layer.get_weights())

    x = keras.Input(shape=tuple(input_shape)[1:], dtype=input_dtype)
    y = layer(x)
    if keras.backend.standardize_dtype(y.dtype) != expected_output_dtype:
        raise AssertionError(
            f"{layer_cls.__name__} with {kwargs}: output dtype {y.dtype}, "
            f"expected {expected_output_dtype}."
        )
    model = keras.Model(x, y)
    expected_shape = layer.compute_output_shape(tuple(input_shape))
    output = _predict(model, input_data)
    _check_shape(layer_cls, expected_shape, output.shape, "in a functional model")
    if expected_output is not None:
        np.testing.assert_allclose(output, expected_output, rtol=1e-3)
    _check_recovered(model, keras.Model.from_config(model.get_config()), input_data, output)

    # A fresh layer, so that its metrics are set up once.
    layer = layer_cls(**kwargs)
    model = keras.Model(x, layer(x))
    model.compile("rmsprop", "mse", weighted_metrics=["acc"], run_eagerly=should_run_eagerly)
    model.train_on_batch(input_data, output)

    layer = layer_cls.from_config(layer.get_config())
    model = keras.Sequential([keras.Input(batch_shape=tuple(input_shape)), layer])
    output = _predict(model, input_data)
    _check_shape(layer_cls, expected_shape, output.shape, "rebuilt from its config")
    if expected_output is not None:
        np.testing.assert_allclose(output, expected_output, rtol=1e-3)
    _check_recovered(model, keras.Sequential.from_config(model.get_config()), input_data, output)
    return output
