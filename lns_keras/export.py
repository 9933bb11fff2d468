"""Export a folded binary model to TFLite, as a 1-bit LCE flatbuffer or a float file.

The model is exported as a TensorFlow SavedModel (`model.export(...,
format="tf_saved_model")`) and converted either by larq-compute-engine (`lce=True`:
binary convolutions become `LceBconv2d` ops with bit-packed weights) or by TensorFlow's
own TFLite converter. The file is written under a temporary name and moved into place,
so a crash never leaves half a file at `path`.

Both converters are TensorFlow's, so `to_tflite` needs the TensorFlow backend. A model
trained under JAX or PyTorch is saved as a `.keras` file, which loads under TensorFlow
with the same predictions, and exported there:

```bash
KERAS_BACKEND=tensorflow python -c "import keras, lns_keras; lns_keras.export.to_tflite(
    keras.saving.load_model('folded.keras'), 'model.tflite')"
```
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
import warnings
from collections.abc import Iterator

import keras

from lns_keras.convert import is_binary_layer
from lns_keras.layers.lns import is_lns_layer
from lns_keras.layers.quantized import QuantConv2D

__all__ = ["atomic_path", "atomic_write_bytes", "save_model", "tflite_op_names", "to_tflite"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """A temporary file beside `path` to write to; moved onto `path` when the block ends.

    If the block raises, the temporary file is removed and `path` is left as it was, so a
    crash never leaves half a file behind. The file gets the mode any new file gets from
    the user's umask (0644 under umask 022, 0600 under 077).

    Args:
        path: Destination file.
        suffix: Ending of the temporary name, for writers that check it (`".keras"`);
            default: the destination's own name.

    Returns:
        A context manager giving the temporary path, in the destination's folder (so the
        rename is atomic).

    Raises:
        OSError: If the folder cannot be created or the rename fails.

    Example:
        ```python
        with atomic_path("model.keras", suffix=".keras") as tmp:
            model.save(tmp)
        ```
    """
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    tmp = _new_file(folder, prefix=".tmp-", suffix=suffix or os.path.basename(path))
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _new_file(folder: str, prefix: str, suffix: str) -> str:
    """Create an empty file with a new name in `folder`, as `open(name, "w")` would.

    `tempfile.mkstemp` creates its file with mode 0600 whatever the umask, and the rename
    keeps that mode: every result would be unreadable to the user's group. Opened with
    mode 0666 the file gets what the umask leaves (0644 under umask 022), like any file
    the user writes; `O_EXCL` keeps the name to this caller alone.
    """
    for _ in range(100):
        name = os.path.join(folder, f"{prefix}{secrets.token_hex(6)}-{suffix}")
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return name
    raise FileExistsError(f"No free temporary name in {folder!r}.")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and a rename.

    Args:
        path: Destination file.
        data: The bytes to write.

    Raises:
        OSError: If the folder cannot be created or the file cannot be written; the
            temporary file is removed and `path` is left as it was.
        TypeError: If `data` is not bytes-like.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def to_tflite(model: keras.Model, path: str | os.PathLike, lce: bool = True) -> str:
    """Convert a folded model to a TFLite file.

    Every quantized layer exports, the zoo layers
    ([`lns_keras.layers.zoo`][lns_keras.layers.zoo]) included, and the file predicts what
    the Keras model predicts. With `lce=True` only a binary `QuantConv2D` becomes a
    1-bit operation (`LceBconv2d`, bit-packed weights): larq-compute-engine has no
    binary kernel for the other layers (`QuantDense`, `QuantConv1D`, `QuantConv3D`,
    depthwise, separable, transposed and locally connected ones), which run as float
    operations on their binary values, at a float layer's speed and size. A warning names
    those layers.

    Args:
        model: A built model without LNS layers (see [`fold`][lns_keras.convert.fold]).
        path: Where to write the `.tflite` file.
        lce: `True` for a 1-bit flatbuffer through larq-compute-engine (needs the
            `larq-compute-engine` package; run it with LCE's interpreter), `False` for a
            standard float TFLite file.

    Returns:
        The path written.

    Raises:
        RuntimeError: Under a Keras backend other than TensorFlow (the converters are
            TensorFlow's); the message says how to export from a `.keras` file.
        ValueError: If `model` still has LNS layers.
        ImportError: If `lce=True` and larq-compute-engine is not installed.
        OSError: If `path` cannot be written.

    Warns:
        UserWarning: With `lce=True`, naming the binary layers (1-bit input and kernels)
            other than `QuantConv2D`, which the file holds as float operations.

    Example:
        ```python
        lns_keras.export.to_tflite(lns_keras.convert.fold(lns_model), "model.tflite")
        ```
    """
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            f"to_tflite converts with TensorFlow's converters and needs the TensorFlow "
            f"backend; Keras runs the {backend!r} backend here. Save the model "
            "(model.save('folded.keras')) and export it in a process started with "
            "KERAS_BACKEND=tensorflow: lns_keras.export.to_tflite("
            "keras.saving.load_model('folded.keras'), 'model.tflite')."
        )
    lns_layers = [layer.name for layer in model._flatten_layers() if is_lns_layer(layer)]
    if lns_layers:
        raise ValueError(
            f"`model` still has LNS layers {lns_layers}; fold it first with "
            "lns_keras.convert.fold(model)."
        )
    if lce:
        _warn_float_binary_layers(model)
    destination = os.path.abspath(path)
    cwd = os.getcwd()  # the TFLite converter may chdir into the temporary folder
    try:
        flatbuffer = _convert(model, lce)
    finally:
        os.chdir(cwd)
    atomic_write_bytes(destination, flatbuffer)
    return os.fspath(path)


def _warn_float_binary_layers(model: keras.Model) -> None:
    """Warn about binary layers that larq-compute-engine leaves as float operations."""
    left = [
        f"{layer.name} ({type(layer).__name__})"
        for layer in model._flatten_layers(include_self=False)
        if is_binary_layer(layer) and not isinstance(layer, QuantConv2D)
    ]
    if left:
        warnings.warn(
            f"larq-compute-engine has 1-bit kernels for 2D convolutions only: the binary "
            f"layers {left} of `model` {model.name!r} are exported as float operations on "
            "their binary values (same predictions, a float layer's speed and size).",
            stacklevel=3,
        )


def _convert(model: keras.Model, lce: bool) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        saved_model = os.path.join(tmp, "saved_model")
        model.export(saved_model, format="tf_saved_model", verbose=False)
        if lce:
            try:
                import larq_compute_engine as lce_module
            except ImportError as error:
                raise ImportError(
                    "to_tflite(lce=True) needs larq-compute-engine: pip install larq-compute-engine"
                ) from error
            flatbuffer = lce_module.convert_saved_model(saved_model)
        else:
            import tensorflow as tf

            flatbuffer = tf.lite.TFLiteConverter.from_saved_model(saved_model).convert()
    return flatbuffer


def tflite_op_names(flatbuffer: bytes) -> list[str]:
    """The operator names in a TFLite flatbuffer: builtin names and custom codes.

    Args:
        flatbuffer: The bytes of a `.tflite` file.

    Returns:
        The names of the operator codes, e.g. `["CONV_2D", "LceBconv2d", ...]`.

    Raises:
        struct.error: From the flatbuffer reader, if `flatbuffer` is not a TFLite model
            (e.g. empty or truncated).
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.python import schema_util

    builtin_names = {
        code: name
        for name, code in vars(schema.BuiltinOperator).items()
        if not name.startswith("_")
    }
    model = schema.Model.GetRootAsModel(flatbuffer, 0)
    names = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        if code.CustomCode():
            names.append(code.CustomCode().decode())
        else:
            names.append(builtin_names[schema_util.get_builtin_code_from_operator_code(code)])
    return names


def save_model(model: keras.Model, path: str | os.PathLike) -> str:
    """`model.save(path)` through a temporary `.keras` file in the same folder and a rename.

    Args:
        model: The model.
        path: Destination, ending in `.keras`.

    Returns:
        The path written.

    Raises:
        ValueError: If `path` does not end in `.keras`.
        OSError: If the folder cannot be created or the file cannot be written; `path`
            is left as it was.
    """
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ValueError(f"`path` must end in '.keras', got path={path!r}.")
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
    return path
