"""LNS layers: binarization by a learned mapping with noisy supervision.

`LNSQuantConv2D` and `LNSQuantDense` are `QuantConv2D` / `QuantDense` whose binary kernel
is not `sign(W)` but `kernel_quantizer(f_θ(W))`: a small CNN, the
[`BinarizationMapping`][lns_keras.mapping.BinarizationMapping], reads the whole latent
kernel and predicts its binary version $\\hat Q$ (Eq. 4). In training each layer adds
$\\alpha \\cdot \\tilde\\ell_i$ through `add_loss`, the noise-corrected loss between $\\hat Q$
and the noisy labels $\\tilde Q = \\operatorname{sign}(W)$ (Eqs. 15-17, 21).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from lns_keras import _checks, losses, quantizers
from lns_keras.layers.quantized import QuantConv2D, QuantDense
from lns_keras.mapping import BinarizationMapping

__all__ = ["LNSQuantConv2D", "LNSQuantDense", "default_kernel_quantizer", "is_lns_layer"]

LOSS_REDUCTIONS = ("mean", "sum")


def default_kernel_quantizer():
    """A new `SteSign(clip_value=None)`: what `kernel_quantizer=None` gives an LNS layer.

    `sign` forward, identity straight-through gradient: the classification gradient
    reaches every entry of $\\hat Q$, which is unbounded, and through it $\\theta$ and $W$
    (Algorithm 1, lines 10-11). `ste_sign`'s default window, $|x| \\le 1$, suits latent
    weights clipped to $[-1, 1]$, but after the warm start most of $\\hat Q$ lies outside
    it and would get no gradient (`docs/concepts.md`, "The gradient path").

    Returns:
        A `SteSign` quantizer.

    Raises:
        Nothing: It takes no argument.
    """
    return quantizers.SteSign(clip_value=None)


NOISY_LABELS = ("latent", "pretrained")


def _noise_rates(rho) -> tuple[float, float]:
    """`rho` as `(rho_pos, rho_neg)`, Python floats: a number means both rates equal
    (paper §3.2)."""
    if isinstance(rho, list | tuple):
        if len(rho) != 2:
            raise ValueError(
                f"`rho` must be a number or a pair (rho_pos, rho_neg), got rho={rho!r}."
            )
        rho_pos, rho_neg = rho
    else:
        rho_pos = rho_neg = rho
    try:
        losses.check_noise_rates(rho_pos, rho_neg)
    except ValueError as error:
        # Name the argument the user passed, not only the rate taken from it.
        raise ValueError(f"Invalid `rho`, got rho={rho!r}: {error}") from None
    return float(rho_pos), float(rho_neg)


class _LNSMixin:
    """What the LNS conv and dense layers share."""

    def _init_lns(
        self, alpha, rho, loss_reduction, noisy_labels, mapping_width, mapping_activation
    ):
        alpha = _checks.nonnegative_real("alpha", alpha)
        if loss_reduction not in LOSS_REDUCTIONS:
            raise ValueError(
                f"`loss_reduction` must be one of {LOSS_REDUCTIONS}, got "
                f"loss_reduction={loss_reduction!r}."
            )
        if noisy_labels not in NOISY_LABELS:
            raise ValueError(
                f"`noisy_labels` must be one of {NOISY_LABELS}, got noisy_labels={noisy_labels!r}."
            )
        mapping_width = _checks.integer("mapping_width", mapping_width, minimum=1)
        self.noise_rates = _noise_rates(rho)
        self.alpha = alpha
        # Python numbers, in the form given (a number or a pair): NumPy scalars would not
        # survive the JSON config.
        self.rho = list(self.noise_rates) if isinstance(rho, list | tuple) else self.noise_rates[0]
        self.loss_reduction = loss_reduction
        self.noisy_labels = noisy_labels
        self.mapping_width = mapping_width
        self.mapping_activation = mapping_activation
        self.mapping = BinarizationMapping(
            width=mapping_width, output_activation=mapping_activation, name="mapping"
        )

    def build(self, input_shape):
        super().build(input_shape)
        self.mapping.build(tuple(self.kernel.shape))
        if self.noisy_labels == "pretrained":
            self.pretrained_labels = self.add_weight(
                name="pretrained_labels",
                shape=tuple(self.kernel.shape),
                initializer="ones",
                trainable=False,
            )
            self.snapshot_labels()

    def snapshot_labels(self) -> None:
        """Freeze the current `sign(W)` as the noisy labels (`noisy_labels="pretrained"`).

        Does nothing with `noisy_labels="latent"`. Building the layer takes a first
        snapshot; call this again after assigning new weights to `kernel`.

        Raises:
            AttributeError: If `noisy_labels="pretrained"` and the layer is not built yet.
        """
        if self.noisy_labels == "pretrained":
            self.pretrained_labels.assign(quantizers.sign(self.kernel))

    def binary_estimate(self):
        """$\\hat Q = f_\\theta(W)$ (Eq. 4), real-valued, the same in training and inference.

        Returns:
            A real-valued tensor of the kernel's shape.

        Raises:
            AttributeError: From Keras, if the layer is not built yet (it has no `kernel`).
        """
        return self.mapping(self.kernel)

    def noisy_targets(self):
        """$\\tilde Q$: `sign(W)` of the current latent weights (Algorithm 1, line 3), or the
        frozen pretrained snapshot; never a path for gradients.

        Returns:
            A tensor of ±1 of the kernel's shape, with gradients stopped.

        Raises:
            AttributeError: From Keras, if the layer is not built yet (it has no `kernel`).
        """
        if self.noisy_labels == "pretrained":
            return ops.stop_gradient(self.pretrained_labels)
        return ops.stop_gradient(quantizers.sign(self.kernel))

    def noisy_supervision_loss(self, q_hat):
        """The layer loss $\\tilde\\ell_i$: mean (Eq. 16) or sum (Eq. 17) of Eq. 15.

        Args:
            q_hat: $\\hat Q$, as from `binary_estimate()`: a tensor of the kernel's shape.

        Returns:
            A scalar tensor, reduced as `loss_reduction` says and not yet weighted by
            `alpha`.

        Raises:
            AttributeError: From Keras, if the layer is not built yet; or if `q_hat` has
                no `dtype` (e.g. a Python list).
            tensorflow.errors.InvalidArgumentError: From TensorFlow, if the shape of
                `q_hat` does not broadcast against the kernel's.
        """
        # The labels are sign(W), ±1 by construction: the unchecked Eq. 15.
        elementwise = losses._corrected_loss(q_hat, self.noisy_targets(), *self.noise_rates)
        if self.loss_reduction == "sum":
            return ops.sum(elementwise)  # Eq. 17
        return ops.mean(elementwise)  # Eq. 16

    def quantized_kernel(self, training=None):
        """The kernel the layer multiplies with: `kernel_quantizer(Q̂)`, without its scale.

        Args:
            training: When true and `alpha > 0`, also add `alpha · ℓ̃_i` to the layer's
                losses through `add_loss` (Eq. 21).

        Returns:
            A tensor of the kernel's shape.

        Raises:
            AttributeError: From Keras, if the layer is not built yet (it has no `kernel`).
        """
        q_hat = self.binary_estimate()
        if training and self.alpha > 0:
            self.add_loss(self.alpha * self.noisy_supervision_loss(q_hat))  # Eq. 21
        return self._quantize_kernel(q_hat)

    def binary_kernel(self):
        """The kernel's quantized values without scale: `kernel_quantizer(Q̂)`.

        Returns:
            A tensor of the kernel's shape (±1 with the default `kernel_quantizer`).

        Raises:
            AttributeError: From Keras, if the layer is not built yet (it has no `kernel`).
        """
        return self._quantize_kernel(self.binary_estimate())

    def _lns_config(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "rho": list(self.rho) if isinstance(self.rho, list | tuple) else self.rho,
            "loss_reduction": self.loss_reduction,
            "noisy_labels": self.noisy_labels,
            "mapping_width": self.mapping_width,
            "mapping_activation": self.mapping_activation,
        }


@keras.saving.register_keras_serializable(package="lns_keras")
class LNSQuantConv2D(_LNSMixin, QuantConv2D):
    r"""Binary 2D convolution whose binary kernel is learned by a mapping network (LNS).

    Forward: $\hat Q = f_\theta(W)$ (Eq. 4), then
    $y = \operatorname{conv}(q_a(x),\, q_w(\hat Q)) \cdot s(W) + b$ with
    $s(W) = \operatorname{mean}|W|$ by default. In training the layer adds
    $\alpha\,\tilde\ell_i(\hat Q, \tilde Q)$ with $\tilde Q = \operatorname{sign}(W)$
    through `add_loss` (Eqs. 15-17, 21).

    Args:
        filters: Number of output channels.
        kernel_size: Height and width of the kernel.
        *args: Further positional arguments of `keras.layers.Conv2D`.
        alpha: Weight $\alpha \ge 0$ of the noisy-supervision loss (Eq. 21); 0 turns the
            supervision off and keeps the mapping (the paper's "LNS w/o noisy supervision").
        rho: Noise rate $\rho$, or a pair $(\rho_{+1}, \rho_{-1})$; rates $\ge 0$ with
            sum $< 1$.
        loss_reduction: `"mean"` over the kernel's elements (Eq. 16) or `"sum"` (Eq. 17).
        noisy_labels: `"latent"`: sign of the current latent weights (Algorithm 1);
            `"pretrained"`: a frozen snapshot, taken when built or by
            `snapshot_labels()` (which [`to_lns`][lns_keras.convert.to_lns] calls).
        kernel_scale: `"layer"` (mean |W|, DoReFa, the default), `"channel"` or `None`.
        mapping_width: Channel multiplier of the mapping's hidden layers (2 in the paper).
        mapping_activation: `None` (default): $\hat Q$ unbounded; `"tanh"`:
            $\hat Q = \tanh(f_\theta(W))$, bounded (see
            [`BinarizationMapping`][lns_keras.BinarizationMapping]).
        input_quantizer: Quantizer of the input, default `"ste_sign"`.
        kernel_quantizer: Quantizer applied to $\hat Q$. `None` (default):
            `SteSign(clip_value=None)`, whose straight-through gradient passes everywhere,
            so the classification gradient reaches every entry of the unbounded
            $\hat Q$ (Algorithm 1, lines 10-11). `"ste_sign"` (window $|x| \le 1$) was
            the default before; it passes nothing where $|\hat Q| > 1$.
        **kwargs: Every other argument of `QuantConv2D` / `keras.layers.Conv2D`.

    Raises:
        ValueError: For an `alpha` that is not a finite real number ≥ 0 (NumPy scalars
            are accepted; `True`, `nan`, `inf` are not); invalid noise rates (a rate that
            is not a finite real number ≥ 0, a sum ≥ 1, or a sequence that is not a
            pair); a `mapping_width` that is not a positive integer (`True` is not); an
            unknown `loss_reduction`, `noisy_labels`, `kernel_scale`, quantizer or
            constraint; each names the value. From Keras: any argument
            `keras.layers.Conv2D` rejects, or a call on an input whose rank or channel
            count does not fit the layer.

    Example:
        ```python
        x = keras.Input((32, 32, 16))
        y = lns_keras.LNSQuantConv2D(
            16, 3, padding="same", use_bias=False, alpha=1.0, rho=0.005,
            kernel_constraint="weight_clip",
        )(x)
        ```
    """

    def __init__(
        self,
        filters: int,
        kernel_size,
        *args,
        alpha: float = 1.0,
        rho: float | tuple[float, float] = 0.005,
        loss_reduction: str = "mean",
        noisy_labels: str = "latent",
        kernel_scale: str | None = "layer",
        mapping_width: int = 2,
        mapping_activation: str | None = None,
        input_quantizer="ste_sign",
        kernel_quantizer=None,
        **kwargs,
    ):
        super().__init__(
            filters,
            kernel_size,
            *args,
            input_quantizer=input_quantizer,
            kernel_quantizer=kernel_quantizer or default_kernel_quantizer(),
            kernel_scale=kernel_scale,
            **kwargs,
        )
        self._init_lns(alpha, rho, loss_reduction, noisy_labels, mapping_width, mapping_activation)

    def get_config(self):
        return {**super().get_config(), **self._lns_config()}


@keras.saving.register_keras_serializable(package="lns_keras")
class LNSQuantDense(_LNSMixin, QuantDense):
    r"""Binary dense layer whose binary kernel is learned by a mapping network (LNS).

    The dense kernel $(c, n)$ is read as $n$ filters of size $1 \times 1$ with $c$
    channels, so the mapping uses $1 \times 1$ convolutions ($k = 1$).

    Args:
        units: Number of outputs.
        *args: Further positional arguments of `keras.layers.Dense`.
        alpha: Weight $\alpha \ge 0$ of the noisy-supervision loss (Eq. 21).
        rho: Noise rate $\rho$, or a pair $(\rho_{+1}, \rho_{-1})$.
        loss_reduction: `"mean"` (Eq. 16) or `"sum"` (Eq. 17).
        noisy_labels: `"latent"` or `"pretrained"`.
        kernel_scale: `"layer"` (default), `"channel"` or `None`.
        mapping_width: Channel multiplier of the mapping's hidden layers.
        mapping_activation: `None` (default) or `"tanh"`, as for `LNSQuantConv2D`.
        input_quantizer: Quantizer of the input, default `"ste_sign"`.
        kernel_quantizer: Quantizer applied to $\hat Q$; `None` (default):
            `SteSign(clip_value=None)`, as for `LNSQuantConv2D`.
        **kwargs: Every other argument of `QuantDense` / `keras.layers.Dense`.

    Raises:
        ValueError: As for [`LNSQuantConv2D`][lns_keras.LNSQuantConv2D], with
            `keras.layers.Dense` in place of `keras.layers.Conv2D`.

    Example:
        ```python
        x = keras.Input((256,))
        y = lns_keras.LNSQuantDense(128, alpha=1.0, rho=0.005)(x)
        ```
    """

    def __init__(
        self,
        units: int,
        *args,
        alpha: float = 1.0,
        rho: float | tuple[float, float] = 0.005,
        loss_reduction: str = "mean",
        noisy_labels: str = "latent",
        kernel_scale: str | None = "layer",
        mapping_width: int = 2,
        mapping_activation: str | None = None,
        input_quantizer="ste_sign",
        kernel_quantizer=None,
        **kwargs,
    ):
        super().__init__(
            units,
            *args,
            input_quantizer=input_quantizer,
            kernel_quantizer=kernel_quantizer or default_kernel_quantizer(),
            kernel_scale=kernel_scale,
            **kwargs,
        )
        self._init_lns(alpha, rho, loss_reduction, noisy_labels, mapping_width, mapping_activation)

    def get_config(self):
        return {**super().get_config(), **self._lns_config()}


def is_lns_layer(layer) -> bool:
    """Whether `layer` is an LNS layer (owns a binarization mapping).

    Args:
        layer: Any object.

    Returns:
        `True` for an `LNSQuantConv2D` or `LNSQuantDense` (or a subclass).

    Raises:
        Nothing: Any object is accepted; everything else gives `False`.
    """
    return isinstance(layer, _LNSMixin)
