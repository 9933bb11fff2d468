"""Every public function and class documents its Args, Returns and Raises; classes an Example.

The public names are the modules' `__all__`, plus the layer methods a user calls
(`binary_kernel`, `snapshot_labels`, ...), which live on private mixins. Only docstrings
and signatures are read: no layer or model is built.
"""

import importlib
import inspect
import pathlib
import pkgutil
import re

import pytest

MODULES = [
    "lns_keras",
    "lns_keras.quantizers",
    "lns_keras.activations",
    "lns_keras.constraints",
    "lns_keras.layers",
    "lns_keras.layers.quantized",
    "lns_keras.layers.zoo",
    "lns_keras.layers.lns",
    "lns_keras.layers.slb",
    "lns_keras.kbit",
    "lns_keras.slb",
    "lns_keras.mapping",
    "lns_keras.losses",
    "lns_keras.convert",
    "lns_keras.callbacks",
    "lns_keras.optimizers",
    "lns_keras.metrics",
    "lns_keras.context",
    "lns_keras.summary",
    "lns_keras.models",
    "lns_keras.export",
    "lns_keras.compat",
]

# Modules documented by a `::: module` directive in docs/api/ (the packages
# `lns_keras` and `lns_keras.layers` only re-export what these define).
DOCUMENTED_MODULES = [m for m in MODULES if m not in ("lns_keras", "lns_keras.layers")]

LAYER_METHODS = {
    "QuantConv2D": ["quantized_kernel", "binary_kernel"],
    "QuantDense": ["quantized_kernel", "binary_kernel", "quantize"],
    "LNSQuantConv2D": [
        "quantized_kernel",
        "binary_kernel",
        "binary_estimate",
        "noisy_targets",
        "noisy_supervision_loss",
        "snapshot_labels",
    ],
    "LNSQuantDense": [
        "quantized_kernel",
        "binary_kernel",
        "binary_estimate",
        "noisy_targets",
        "noisy_supervision_loss",
        "snapshot_labels",
    ],
    **{
        name: [
            "quantized_kernel",
            "binary_kernel",
            "probabilities",
            "soft_kernel",
            "hard_kernel",
            "set_temperature",
            "init_logits_from_kernel",
        ]
        for name in ("SLBQuantConv2D", "SLBQuantDense")
    },
}


def _public_objects() -> dict:
    """Qualified name -> public function or class, from every module's `__all__`."""
    found = {}
    for module_name in MODULES:
        # import_module, not attribute access: `lns_keras.summary` is also a function.
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                found.setdefault(f"{obj.__module__}.{obj.__qualname__}", obj)
    return found


def _public_methods() -> dict:
    import lns_keras

    return {
        f"{cls_name}.{method}": getattr(getattr(lns_keras, cls_name), method)
        for cls_name, methods in LAYER_METHODS.items()
        for method in methods
    }


PUBLIC = _public_objects()
METHODS = _public_methods()


def _doc(obj) -> str:
    # The object's own docstring: inspect.getdoc would fall back to a base class's.
    return inspect.cleandoc(obj.__doc__ or "")


def _has_section(doc: str, section: str) -> bool:
    return re.search(rf"^\s*{section}:\s*$", doc, flags=re.MULTILINE) is not None


def _named_parameters(obj) -> list[str]:
    """Parameters other than `self`, `*args` and `**kwargs`."""
    function = obj.__init__ if inspect.isclass(obj) else obj
    parameters = list(inspect.signature(function).parameters.values())
    if parameters and parameters[0].name == "self":
        parameters = parameters[1:]
    if all(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters):
        return []
    return [p.name for p in parameters]


def _returns_something(function) -> bool:
    annotation = inspect.signature(function).return_annotation
    return annotation not in (None, "None")


def _public_modules() -> list[str]:
    """Every module of the package whose dotted name has no part starting with `_`."""
    import lns_keras

    found = ["lns_keras"]
    for info in pkgutil.walk_packages(lns_keras.__path__, "lns_keras."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            found.append(info.name)
    return found


def test_every_public_module_is_checked():
    missing = sorted(set(_public_modules()) - set(MODULES))
    assert missing == [], f"add {missing} to MODULES"


def test_public_names_found():
    names = {qualified.rsplit(".", 1)[-1] for qualified in PUBLIC}
    assert {"QuantConv2D", "LNSQuantDense", "BinarizationMapping", "SteSign", "to_lns"} <= names
    assert "summary" in names and "model_stats" in names


@pytest.mark.parametrize("name", sorted(PUBLIC) + sorted(METHODS))
def test_docstring_sections(name):
    obj = PUBLIC.get(name) or METHODS[name]
    doc = _doc(obj)
    assert doc, f"{name} has no docstring"
    if _named_parameters(obj):
        # "Keyword Args:" is Google style's section for keyword-only arguments: the
        # quantizers without an `__init__` of their own take keras.layers.Layer's.
        assert _has_section(doc, "Args") or _has_section(doc, "Keyword Args"), (
            f"{name}: no Args: section"
        )
    if not inspect.isclass(obj) and _returns_something(obj):
        assert _has_section(doc, "Returns"), f"{name}: no Returns: section"
    assert _has_section(doc, "Raises"), f"{name}: no Raises: section"


CLASSES = sorted(name for name, obj in PUBLIC.items() if inspect.isclass(obj))


@pytest.mark.parametrize("name", CLASSES)
def test_classes_have_an_example(name):
    doc = _doc(PUBLIC[name])
    assert _has_section(doc, "Example"), f"{name}: no Example: section"
    assert "```python" in doc, f"{name}: the example is not a fenced python block"


@pytest.mark.parametrize("module_name", DOCUMENTED_MODULES)
def test_module_has_a_row_in_the_api_index(module_name):
    index = pathlib.Path(__file__).resolve().parent.parent / "docs" / "api" / "index.md"
    assert f"| [`{module_name}`](" in index.read_text(), (
        f"{module_name} has no row in docs/api/index.md"
    )


@pytest.mark.parametrize("module_name", DOCUMENTED_MODULES)
def test_module_is_in_the_api_reference(module_name):
    api = pathlib.Path(__file__).resolve().parent.parent / "docs" / "api"
    pages = "\n".join(page.read_text() for page in sorted(api.glob("*.md")))
    assert re.search(rf"^::: {re.escape(module_name)}\s*$", pages, flags=re.MULTILINE), (
        f"{module_name} has no `::: {module_name}` directive in docs/api/"
    )
