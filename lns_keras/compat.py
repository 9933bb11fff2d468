"""Load a model trained with larq (tf.keras 2) into lns_keras on Keras 3.

larq 0.14 runs only under Keras 2. [`load_larq_model`][lns_keras.compat.load_larq_model]
reads what larq's `model.save` wrote, an HDF5 file (`model.save("bnn.h5")`) or a
SavedModel folder (`model.save("bnn")`), without importing larq or tf.keras. It rebuilds
the model, Sequential or functional, from lns_keras and Keras 3 layers, with the same
quantizers, constraints and weights, so that it predicts what larq predicted:

```python
import lns_keras

model = lns_keras.compat.load_larq_model("bnn.h5")
model.predict(images)
```

The model comes back uncompiled: the optimizer's state is not carried over. Compile it
to train on.

What is read. From an HDF5 file: the model config (the JSON in the file's `model_config`
attribute) and each layer's weights (the `model_weights` groups). From a SavedModel
folder: the model config that Keras 2 stored in `keras_metadata.pb` (written by
TensorFlow 2.5 and later), and the variables of the checkpoint `variables/variables`,
found through its object graph. The TensorFlow functions saved in the SavedModel are not
used: they were traced with larq's code, which Keras 3 cannot run.

Covered layer types, by their larq or Keras 2 class name:

- larq: `QuantConv1D`, `QuantConv2D`, `QuantConv3D`, `QuantConv2DTranspose`,
  `QuantConv3DTranspose`, `QuantDense`, `QuantDepthwiseConv2D`,
  `QuantLocallyConnected1D`, `QuantLocallyConnected2D`, `QuantSeparableConv1D`,
  `QuantSeparableConv2D`. Each becomes the lns_keras layer of the same name with
  `kernel_scale=None`, which computes what larq's layer computes, `pad_values`
  included. The quantizers become those of [`lns_keras.quantizers`][lns_keras.quantizers]
  of the same name and arguments (larq's old names `DoReFaQuantizer` and `NoOpQuantizer`
  too); the constraint `weight_clip` becomes
  [`WeightClip`][lns_keras.constraints.WeightClip].
- Keras: `Activation`, `Add`, `Average`, `AveragePooling1D`, `AveragePooling2D`,
  `AveragePooling3D`, `BatchNormalization`, `Concatenate`, `Conv1D`, `Conv1DTranspose`,
  `Conv2D`, `Conv2DTranspose`, `Conv3D`, `Conv3DTranspose`, `Cropping1D`, `Cropping2D`,
  `Dense`, `DepthwiseConv2D`, `Dropout`, `ELU`, `Flatten`, `GlobalAveragePooling1D`,
  `GlobalAveragePooling2D`, `GlobalAveragePooling3D`, `GlobalMaxPooling1D`,
  `GlobalMaxPooling2D`, `GlobalMaxPooling3D`, `InputLayer`, `LayerNormalization`,
  `LeakyReLU`, `MaxPooling1D`, `MaxPooling2D`, `MaxPooling3D`, `Maximum`, `Minimum`,
  `Multiply`, `PReLU`, `Permute`, `ReLU`, `Rescaling`, `Reshape`, `SeparableConv1D`,
  `SeparableConv2D`, `Softmax`, `SpatialDropout2D`, `Subtract`, `UpSampling1D`,
  `UpSampling2D`, `ZeroPadding1D`, `ZeroPadding2D`, `ZeroPadding3D`: each becomes the
  Keras 3 layer of the same name.

Any other layer type (a custom layer, `TFOpLambda` from writing `x + y` on Keras 2
tensors, a model nested in a model) is refused with a `ValueError` that names it. So is
the activation `hard_sigmoid`, whose Keras 2 and Keras 3 definitions differ, and any
config value Keras 3 has no equivalent for.
"""

from __future__ import annotations

import inspect
import json
import os
from typing import Any

import h5py
import keras
import numpy as np

from lns_keras import constraints, layers, quantizers

__all__ = ["LAYER_TYPES", "load_larq_model"]

# The larq layers: one line each, larq's class name -> the lns_keras layer.
LARQ_LAYERS: dict[str, type] = {
    "QuantConv1D": layers.QuantConv1D,
    "QuantConv2D": layers.QuantConv2D,
    "QuantConv3D": layers.QuantConv3D,
    "QuantConv2DTranspose": layers.QuantConv2DTranspose,
    "QuantConv3DTranspose": layers.QuantConv3DTranspose,
    "QuantDense": layers.QuantDense,
    "QuantDepthwiseConv2D": layers.QuantDepthwiseConv2D,
    "QuantLocallyConnected1D": layers.QuantLocallyConnected1D,
    "QuantLocallyConnected2D": layers.QuantLocallyConnected2D,
    "QuantSeparableConv1D": layers.QuantSeparableConv1D,
    "QuantSeparableConv2D": layers.QuantSeparableConv2D,
}

# Keras 2 built-ins whose Keras 3 layer of the same name takes the same config and
# computes the same thing.
_KERAS_BUILTINS = (
    "Activation",
    "Add",
    "Average",
    "AveragePooling1D",
    "AveragePooling2D",
    "AveragePooling3D",
    "BatchNormalization",
    "Concatenate",
    "Conv1D",
    "Conv1DTranspose",
    "Conv2D",
    "Conv2DTranspose",
    "Conv3D",
    "Conv3DTranspose",
    "Cropping1D",
    "Cropping2D",
    "Dense",
    "DepthwiseConv2D",
    "Dropout",
    "ELU",
    "Flatten",
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalAveragePooling3D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "GlobalMaxPooling3D",
    "LayerNormalization",
    "LeakyReLU",
    "MaxPooling1D",
    "MaxPooling2D",
    "MaxPooling3D",
    "Maximum",
    "Minimum",
    "Multiply",
    "PReLU",
    "Permute",
    "ReLU",
    "Rescaling",
    "Reshape",
    "SeparableConv1D",
    "SeparableConv2D",
    "Softmax",
    "SpatialDropout2D",
    "Subtract",
    "UpSampling1D",
    "UpSampling2D",
    "ZeroPadding1D",
    "ZeroPadding2D",
    "ZeroPadding3D",
)

LAYER_TYPES: dict[str, type] = {
    **{name: getattr(keras.layers, name) for name in _KERAS_BUILTINS},
    "InputLayer": keras.layers.InputLayer,
    **LARQ_LAYERS,
}
"""The layer types `load_larq_model` rebuilds: larq or Keras 2 class name -> Keras 3 class."""

# Config keys Keras 2 writes and Keras 3 does not take, with the values at which they
# change nothing: dropped at those values, refused at any other.
_INERT_KEYS: dict[str, tuple] = {
    "pad_values": (0, 0.0),  # larq: padding="same" pads with zeros, as Keras does
    "groups": (1,),  # depthwise, separable and transposed convolutions
    "noise_shape": (None,),  # SpatialDropout2D
    "trainable": (True, False),  # only layers without weights (SpatialDropout2D) lack it
    "fused": (None, True, False),  # BatchNormalization: an implementation choice
    "renorm": (False,),
    "virtual_batch_size": (None,),
    "adjustment": (None,),
}

# Config keys a Keras 2 layer writes but never uses, per class: the separable
# convolutions inherit `kernel_*` from the convolution base and use `depthwise_*` and
# `pointwise_*` instead.
_UNUSED_KEYS: dict[str, tuple[str, ...]] = {
    name: ("kernel_initializer", "kernel_regularizer", "kernel_constraint")
    for name in (
        "SeparableConv1D",
        "SeparableConv2D",
        "QuantSeparableConv1D",
        "QuantSeparableConv2D",
    )
}

# Config keys Keras 3 renamed, per class.
_RENAMED_KEYS: dict[str, dict[str, str]] = {"LeakyReLU": {"alpha": "negative_slope"}}

# Weights Keras 3 names differently (Keras 3 name -> Keras 2 name).
_RENAMED_WEIGHTS: dict[str, str] = {"kernel": "depthwise_kernel"}

# larq's old quantizer class names.
_RENAMED_QUANTIZERS: dict[str, str] = {"DoReFaQuantizer": "DoReFa", "NoOpQuantizer": "NoOp"}

# Activations whose Keras 2 definition differs from Keras 3's (hard_sigmoid: slope 0.2
# in Keras 2, 1/6 in Keras 3).
_CHANGED_ACTIVATIONS = ("hard_sigmoid",)

_MODEL_CLASSES = ("Sequential", "Functional", "Model")

# What keras_metadata.pb calls a model's layers (its metrics, say, are "_tf_keras_metric").
_LAYER_IDENTIFIERS = (
    "_tf_keras_layer",
    "_tf_keras_input_layer",
    "_tf_keras_network",
    "_tf_keras_sequential",
    "_tf_keras_model",
)

# A layer name -> its weights, each by its Keras 2 name ("kernel", "moving_mean", ...).
_Weights = dict[str, dict[str, np.ndarray]]


def load_larq_model(path: str | os.PathLike) -> keras.Model:
    """Rebuild a model that larq saved (tf.keras 2) from lns_keras and Keras 3 layers.

    See the module's description for what is read and which layer types are covered.

    Args:
        path: An HDF5 file written by `model.save("name.h5")` (or `save_format="h5"`),
            or a SavedModel folder written by `model.save("name")`, with larq 0.14 or
            any tf.keras 2 (a SavedModel: TensorFlow 2.5 or later).

    Returns:
        An uncompiled `keras.Model` (a `keras.Sequential` for a Sequential model)
            whose layers have the names, configs and weights of the saved ones.

    Raises:
        FileNotFoundError: If nothing exists at `path`.
        ValueError: If `path` is neither an HDF5 file nor a SavedModel folder, holds
            only weights (`save_weights`) or a subclassed model (no model config); if
            the model holds a layer type that is not covered (all such layers are named,
            with the covered types), a nested model, the activation `hard_sigmoid`, or
            a config value with no Keras 3 equivalent (e.g. `renorm=True` in a
            `BatchNormalization`); or if a layer's saved weights do not fit the rebuilt
            layer.
        TypeError: If `path` is not a string or a path-like object.

    Example:
        ```python
        # In a tf.keras 2 environment with larq: larq_model.save("bnn.h5")
        model = lns_keras.compat.load_larq_model("bnn.h5")
        logits = model.predict(images)
        ```
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"`path` must be a string or a path, got path={path!r}.")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"No larq model at path={path!r}: expected an HDF5 file (`model.save('x.h5')`) "
            "or a SavedModel folder (`model.save('x')`)."
        )
    if os.path.isdir(path):
        config, weights = _read_saved_model(path)
    elif h5py.is_hdf5(path):
        config, weights = _read_h5(path)
    else:
        raise ValueError(
            f"path={path!r} is neither an HDF5 file nor a SavedModel folder: "
            "load_larq_model reads what tf.keras 2's `model.save` writes."
        )
    model = _rebuild(config, path)
    _assign_weights(model, weights, path)
    return model


# Reading the files.


def _read_h5(path: str) -> tuple[dict, _Weights]:
    with h5py.File(path, "r") as file:
        raw_config = file.attrs.get("model_config")
        if raw_config is None:
            raise ValueError(
                f"The HDF5 file at path={path!r} holds no model config: it holds only "
                "weights (`save_weights`). Save the whole model with `model.save`."
            )
        config = json.loads(_text(raw_config))
        group = file["model_weights"] if "model_weights" in file else file
        weights = {}
        for layer_name in group.attrs.get("layer_names", []):
            layer_group = group[_text(layer_name)]
            names = [_text(name) for name in layer_group.attrs.get("weight_names", [])]
            weights[_text(layer_name)] = _by_short_name(
                {name: np.asarray(layer_group[name]) for name in names}, _text(layer_name)
            )
    return config, weights


def _text(value: str | bytes) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _by_short_name(arrays: dict[str, np.ndarray], layer_name: str) -> dict[str, np.ndarray]:
    """Key Keras 2 weights "conv2d/kernel:0" by "kernel"."""
    short = {}
    for name, array in arrays.items():
        key = name.rsplit("/", 1)[-1].split(":", 1)[0]
        if key in short:
            raise ValueError(f"Layer {layer_name!r} has two weights named {key!r}.")
        short[key] = array
    return short


def _read_saved_model(folder: str) -> tuple[dict, _Weights]:
    metadata_path = os.path.join(folder, "keras_metadata.pb")
    if not os.path.exists(metadata_path):
        raise ValueError(
            f"The folder path={folder!r} has no keras_metadata.pb: it is not a SavedModel "
            "written by tf.keras 2's `model.save` with TensorFlow 2.5 or later. Save the "
            "model as HDF5 (`model.save('x.h5')`) and load that."
        )
    with open(metadata_path, "rb") as file:
        nodes = _saved_metadata_nodes(file.read())
    root = json.loads(nodes.get("root", ("", "{}"))[1], object_hook=_untuple)
    if "config" not in root:
        raise ValueError(
            f"The SavedModel at path={folder!r} holds no model config (a subclassed "
            "model?): only Sequential and functional models can be rebuilt."
        )
    config = {"class_name": root.get("class_name"), "config": root["config"]}

    # Imported here: TensorFlow is the backend lns_keras runs on, but only this reader
    # needs its checkpoint format.
    import tensorflow as tf
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    reader = tf.train.load_checkpoint(os.path.join(folder, "variables", "variables"))
    graph = trackable_object_graph_pb2.TrackableObjectGraph.FromString(
        reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH")
    )
    root_children = {child.local_name: child.node_id for child in graph.nodes[0].children}
    weights = {}
    for node_path, (identifier, metadata) in nodes.items():
        parts = node_path.split(".")
        if identifier not in _LAYER_IDENTIFIERS or len(parts) != 2 or parts[1] not in root_children:
            continue  # The model itself, a layer's quantizers, metrics, ...
        layer_name = json.loads(metadata).get("name")
        node = graph.nodes[root_children[parts[1]]]
        weights[layer_name] = {
            child.local_name: reader.get_tensor(key)
            for child in node.children
            if (key := _variable_key(graph.nodes[child.node_id])) is not None
        }
    return config, weights


def _untuple(value: dict) -> dict | list:
    # The SavedModel metadata writes a tuple as {"class_name": "__tuple__", "items": [...]}
    # where an HDF5 file's config has a list.
    if value.get("class_name") == "__tuple__" and "items" in value:
        return value["items"]
    return value


def _variable_key(node) -> str | None:
    """The checkpoint key of a variable's object-graph node; None for other nodes."""
    for attribute in node.attributes:
        if attribute.name == "VARIABLE_VALUE":
            return attribute.checkpoint_key
    return None


def _saved_metadata_nodes(data: bytes) -> dict[str, tuple[str, str]]:
    """node_path -> (identifier, metadata JSON) of the `SavedMetadata` in keras_metadata.pb.

    The message is tf.keras's `SavedMetadata {repeated SavedObject nodes = 1}`, with
    `SavedObject {int32 node_id = 2; string node_path = 3; string identifier = 4;
    string metadata = 5; ...}`: decoded here from the wire format, so that neither
    tf.keras nor its generated protobuf module is needed.
    """
    nodes = {}
    for number, node in _protobuf_fields(data):
        if number != 1:
            continue
        fields = dict(_protobuf_fields(node))
        if 3 in fields and 5 in fields:
            identifier = fields.get(4, b"").decode("utf-8")
            nodes[fields[3].decode("utf-8")] = (identifier, fields[5].decode("utf-8"))
    return nodes


def _protobuf_fields(data: bytes):
    """Yield (field number, value) of a serialized protobuf message, one level deep."""
    position = 0
    while position < len(data):
        key, position = _varint(data, position)
        wire_type = key & 7
        if wire_type == 0:
            value, position = _varint(data, position)
        elif wire_type == 2:
            length, position = _varint(data, position)
            value, position = data[position : position + length], position + length
        elif wire_type in (1, 5):
            size = 8 if wire_type == 1 else 4
            value, position = data[position : position + size], position + size
        else:
            raise ValueError(f"keras_metadata.pb is not a protobuf (wire type {wire_type}).")
        yield key >> 3, value


def _varint(data: bytes, position: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if position >= len(data):
            raise ValueError("keras_metadata.pb is truncated.")
        byte = data[position]
        value |= (byte & 0x7F) << shift
        position, shift = position + 1, shift + 7
        if not byte & 0x80:
            return value, position


# Rebuilding the model.


def _rebuild(config: dict, path: str) -> keras.Model:
    class_name, model_config = config.get("class_name"), config.get("config", {})
    layer_configs = model_config.get("layers", [])
    _check_covered(layer_configs, path)
    if class_name == "Sequential":
        return _sequential(model_config, path)
    if class_name in ("Functional", "Model"):
        return _functional(model_config)
    raise ValueError(
        f"The model at path={path!r} is a {class_name}: only Sequential and functional "
        "models can be rebuilt."
    )


def _check_covered(layer_configs: list[dict], path: str) -> None:
    refused = {}
    for layer_config in layer_configs:
        class_name = layer_config.get("class_name")
        name = layer_config.get("config", {}).get("name", layer_config.get("name"))
        if class_name not in LAYER_TYPES:
            refused.setdefault(class_name, []).append(name)
    if refused:
        found = "; ".join(f"{cls} (layers {names})" for cls, names in refused.items())
        nested = set(refused) & set(_MODEL_CLASSES)
        hint = " A model nested in a model is not covered." if nested else ""
        raise ValueError(
            f"The model at path={path!r} holds layer types load_larq_model does not cover: "
            f"{found}.{hint} Covered types: {', '.join(sorted(LAYER_TYPES))}."
        )


def _sequential(config: dict, path: str) -> keras.Sequential:
    layer_configs = list(config["layers"])
    if layer_configs and layer_configs[0]["class_name"] == "InputLayer":
        inputs = _input(layer_configs.pop(0)["config"])
    else:
        first = layer_configs[0]["config"] if layer_configs else {}
        shape = first.get("batch_input_shape") or config.get("build_input_shape")
        if shape is None:
            raise ValueError(
                f"The Sequential model at path={path!r} records no input shape: it was "
                "saved before it was built."
            )
        inputs = keras.Input(batch_shape=tuple(shape), dtype=_dtype(first.get("dtype")))
    return keras.Sequential(
        [inputs, *(_layer(layer_config) for layer_config in layer_configs)],
        name=config.get("name"),
    )


def _functional(config: dict) -> keras.Model:
    # Keras 2 names a tensor [layer name, node index, tensor index]: the node index counts
    # the layer's calls inside this model, in the order its `inbound_nodes` list them.
    built, outputs, pending = {}, {}, {}
    for layer_config in config["layers"]:
        name = layer_config["config"]["name"]
        if layer_config["class_name"] == "InputLayer":
            outputs[name] = [_input(layer_config["config"])]
        else:
            built[name] = _layer(layer_config)
            outputs[name] = []
            pending[name] = list(layer_config["inbound_nodes"])

    def tensor(reference):
        layer_name, node_index, tensor_index = reference[:3]
        return keras.tree.flatten(outputs[layer_name][node_index])[tensor_index]

    def ready(reference):
        return len(outputs.get(reference[0], [])) > reference[1]

    while any(pending.values()):
        progress = False
        for name, nodes in pending.items():
            while nodes and all(ready(reference) for reference in nodes[0]):
                references = nodes.pop(0)
                arguments = [tensor(reference) for reference in references]
                kwargs = references[0][3] if len(references[0]) > 3 else {}
                inputs = arguments[0] if len(arguments) == 1 else arguments
                outputs[name].append(built[name](inputs, **kwargs))
                progress = True
        if not progress:
            raise ValueError(
                "The functional model's graph cannot be rebuilt: the inputs of layers "
                f"{sorted(name for name, nodes in pending.items() if nodes)} never appear."
            )

    def tensors(structure):
        if isinstance(structure, list) and len(structure) >= 3 and isinstance(structure[0], str):
            return tensor(structure)
        if isinstance(structure, dict):
            return {key: tensors(value) for key, value in structure.items()}
        found = [tensors(value) for value in structure]
        return found[0] if len(found) == 1 else found

    return keras.Model(
        tensors(config["input_layers"]), tensors(config["output_layers"]), name=config.get("name")
    )


def _input(config: dict):
    for key in ("sparse", "ragged"):
        if config.get(key):
            raise ValueError(
                f"The input {config.get('name')!r} is {key}: only dense inputs are covered."
            )
    return keras.Input(
        batch_shape=tuple(config["batch_input_shape"]),
        dtype=_dtype(config.get("dtype")),
        name=config.get("name"),
    )


def _layer(layer_config: dict) -> keras.layers.Layer:
    class_name, config = layer_config["class_name"], dict(layer_config["config"])
    cls = LAYER_TYPES[class_name]
    name = config.get("name")
    config.pop("batch_input_shape", None)  # The model's input carries it.
    for key in _UNUSED_KEYS.get(class_name, ()):
        config.pop(key, None)
    for old, new in _RENAMED_KEYS.get(class_name, {}).items():
        if old in config:
            config[new] = config.pop(old)
    accepted = _accepted_arguments(cls)
    arguments = {}
    for key, value in config.items():
        if key in accepted:
            arguments[key] = _convert(key, value, name)
        elif not (key in _INERT_KEYS and value in _INERT_KEYS[key]):
            raise ValueError(
                f"Layer {name!r} ({class_name}) has {key}={value!r}, which the Keras 3 "
                f"layer {cls.__module__}.{cls.__name__} does not take."
            )
    if class_name in ("BatchNormalization",) and isinstance(arguments.get("axis"), list):
        if len(arguments["axis"]) != 1:
            raise ValueError(
                f"Layer {name!r} normalizes over axis={arguments['axis']}: Keras 3's "
                "BatchNormalization takes one axis."
            )
        arguments["axis"] = arguments["axis"][0]
    try:
        return cls(**arguments)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"Layer {name!r} ({class_name}) cannot be rebuilt as {cls.__name__}: {error}"
        ) from error


def _accepted_arguments(cls: type) -> set[str]:
    """The keyword arguments `cls(...)` takes, following `**kwargs` up to keras Layer."""
    accepted = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters.values()
        accepted |= {
            p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }
        if klass is keras.layers.Layer or not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    accepted.discard("self")
    return accepted


def _convert(key: str, value: Any, layer_name: str) -> Any:
    """A Keras 2 / larq config value as the Keras 3 / lns_keras argument."""
    if key.endswith("_quantizer"):
        return _quantizer(value)
    if key.endswith("_constraint"):
        return _constraint(value)
    if key == "dtype":
        return _dtype(value)
    if key == "activation" and value in _CHANGED_ACTIVATIONS:
        raise ValueError(
            f"Layer {layer_name!r} has activation={value!r}, which Keras 3 defines "
            "differently from Keras 2: the rebuilt model would not predict the same."
        )
    return value


def _quantizer(value: Any) -> Any:
    if isinstance(value, dict) and value.get("class_name") in _RENAMED_QUANTIZERS:
        new = _RENAMED_QUANTIZERS[value["class_name"]]
        value = {**value, "class_name": new, "registered_name": new}
    return quantizers.get(value)


def _constraint(value: Any) -> Any:
    """larq's `weight_clip` as lns_keras's WeightClip; Keras's constraints as they are."""
    if isinstance(value, dict) and value.get("class_name") in ("weight_clip", "WeightClip"):
        return constraints.WeightClip(**value.get("config", {}))
    return constraints.get(value) if isinstance(value, str) else value


def _dtype(value: Any) -> Any:
    """A mixed-precision policy config as its name ("mixed_float16")."""
    if isinstance(value, dict):
        return value.get("config", {}).get("name")
    return value


# Copying the weights.


def _assign_weights(model: keras.Model, weights: _Weights, path: str) -> None:
    layer_names = {layer.name for layer in model.layers}
    for name, arrays in weights.items():
        if arrays and name not in layer_names:
            raise ValueError(
                f"The file at path={path!r} holds weights of a layer {name!r} that is not "
                "in the model's config."
            )
    for layer in model.layers:
        _assign_layer_weights(layer, dict(weights.get(layer.name, {})))


def _assign_layer_weights(layer: keras.layers.Layer, arrays: dict[str, np.ndarray]) -> None:
    for variable in layer.weights:
        name = variable.name
        if name not in arrays and _RENAMED_WEIGHTS.get(name) in arrays:
            name = _RENAMED_WEIGHTS[name]
        if name not in arrays:
            raise ValueError(
                f"Layer {layer.name!r} ({type(layer).__name__}) has a weight "
                f"{variable.name!r} that the saved layer lacks (it has {sorted(arrays)})."
            )
        array = arrays.pop(name)
        if tuple(array.shape) != tuple(variable.shape):
            raise ValueError(
                f"Layer {layer.name!r}: the saved {name!r} has shape {array.shape}, the "
                f"rebuilt layer's {tuple(variable.shape)}."
            )
        variable.assign(array)
    if arrays:
        raise ValueError(
            f"Layer {layer.name!r} ({type(layer).__name__}): the saved weights "
            f"{sorted(arrays)} have no place in the rebuilt layer."
        )
