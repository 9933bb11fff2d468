"""The binarization mapping $f_\\theta$ of LNS (paper §3.1 and §4.1).

One small CNN per LNS layer reads the layer's whole latent kernel and predicts its
binary version, $\\hat Q = f_\\theta(W)$ (Eq. 4), so every weight is binarized knowing
the rest of its filter. A conv kernel $W \\in \\mathbb{R}^{k \\times k \\times c \\times n}$
is read as a batch of $n$ images of size $k \\times k$ with $c$ channels. Three
convolutions, stride 1, `same` padding: $c \\to wc \\to wc \\to c$ ($w$ = `width`, 2 in the
paper), batch normalization and ReLU after the first two.

The batch normalization always uses the statistics of the layer's own filters (the
whole batch, every time), in training and in inference alike, so $\\hat Q$ is a
deterministic function of $(W, \\theta)$: the binary weights evaluated are the ones
trained, and folding gives the same predictions.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

__all__ = ["OUTPUT_ACTIVATIONS", "BinarizationMapping"]

OUTPUT_ACTIVATIONS = (None, "tanh")
"""The values `output_activation` takes: `None` (unbounded $\\hat Q$) and `"tanh"`."""


@keras.saving.register_keras_serializable(package="lns_keras")
class BinarizationMapping(keras.layers.Layer):
    """The mapping network $f_\\theta$: latent kernel in, real-valued $\\hat Q$ out.

    Args:
        width: Channel multiplier of the two hidden convolutions (2 in the paper).
        epsilon: Variance epsilon of the batch normalization over filters.
        initialization: `"identity"` (default; with `width >= 2`): start near
            $\\hat Q \\propto (W - \\bar W) / \\sigma_W$ per input channel, so that a converted
            model starts close to its baseline and the warm start only has to close the
            gap; `"glorot"`: plain random initialisation.
        output_activation: `None` (default): $\\hat Q$ is the last convolution's output,
            unbounded; `"tanh"`: $\\hat Q = \\tanh(\\cdot)$ of it, bounded in $(-1, 1)$,
            so that a kernel quantizer's straight-through window $|x| \\le 1$ always
            passes the gradient (one of the gradient paths compared in
            `docs/results.md`).
        **kwargs: Passed to `keras.layers.Layer`.

    Raises:
        ValueError: If `width` is not a positive integer, `initialization` is not one
            of the two or `output_activation` is not `None` or `"tanh"`; from Keras, for a
            keyword argument `keras.layers.Layer` does not
            take, or when called on a kernel that is neither 2-D (dense) nor 4-D (conv).

    Example:
        ```python
        mapping = lns_keras.BinarizationMapping(width=2)
        kernel = keras.random.normal((3, 3, 4, 8))  # a conv kernel (k, k, c, n)
        q_hat = mapping(kernel)  # the same shape, (3, 3, 4, 8)
        ```
    """

    def __init__(
        self,
        width: int = 2,
        epsilon: float = 1e-3,
        initialization: str = "identity",
        output_activation: str | None = None,
        **kwargs,
    ):
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"`mapping_width` must be a positive integer, got {width!r}.")
        if initialization not in ("identity", "glorot"):
            raise ValueError(
                f"`initialization` must be 'identity' or 'glorot', got {initialization!r}."
            )
        if output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(
                "`output_activation` (`mapping_activation` of the LNS layers) must be one "
                f"of {OUTPUT_ACTIVATIONS}, got {output_activation!r}."
            )
        super().__init__(**kwargs)
        self.width = width
        self.output_activation = output_activation
        self.epsilon = epsilon
        self.initialization = initialization

    def build(self, kernel_shape):
        if len(kernel_shape) == 4:  # (k, k, c, n): 3x3 convolutions over k x k images
            channels, taps = kernel_shape[2], 3
        else:  # dense (c, n): k = 1, 1x1 convolutions
            channels, taps = kernel_shape[0], 1
        hidden = self.width * channels
        shapes = [(channels, hidden), (hidden, hidden), (hidden, channels)]
        self.conv_kernels = [
            self.add_weight(
                name=f"conv{i}_kernel",
                shape=(taps, taps, c_in, c_out),
                initializer=self._initializer(i, channels),
            )
            for i, (c_in, c_out) in enumerate(shapes, start=1)
        ]
        # The first two convolutions feed batch normalization, which cancels a bias.
        self.gammas = [
            self.add_weight(name=f"bn{i}_gamma", shape=(hidden,), initializer="ones")
            for i in (1, 2)
        ]
        # The second shift keeps the identity start's values above the ReLU's cut.
        second_beta = 1.0 if self._identity_start(channels) else 0.0
        self.betas = [
            self.add_weight(name="bn1_beta", shape=(hidden,), initializer="zeros"),
            self.add_weight(
                name="bn2_beta",
                shape=(hidden,),
                initializer=keras.initializers.Constant(second_beta),
            ),
        ]
        self.output_bias = self.add_weight(
            name="conv3_bias", shape=(channels,), initializer="zeros"
        )

    def _identity_start(self, channels) -> bool:
        return self.initialization == "identity" and self.width >= 2

    def _initializer(self, index: int, channels: int):
        """Glorot, or the identity start: conv1 splits each channel into its positive
        and negative part (+I, -I at the centre tap), conv2 passes them on (I), conv3
        subtracts them again (+I, -I), so f(W) ≈ (W - mean) / std per input channel and
        sign(Q̂) ≈ sign(W) before any training. Small noise breaks the symmetry."""
        glorot = keras.initializers.GlorotUniform()
        if not self._identity_start(channels):
            return glorot

        def initializer(shape, dtype=None):
            taps, _, c_in, c_out = shape
            centre = np.zeros((c_in, c_out), "float32")
            eye = np.eye(channels, dtype="float32")
            if index == 1:
                centre[:, :channels], centre[:, channels : 2 * channels] = eye, -eye
            elif index == 2:
                centre[:] = np.eye(c_in, dtype="float32")
            else:
                centre[:channels], centre[channels : 2 * channels] = eye, -eye
            kernel = 0.01 * keras.ops.convert_to_numpy(glorot(shape, dtype="float32"))
            kernel[taps // 2, taps // 2] += centre
            return keras.ops.convert_to_tensor(kernel, dtype=dtype)

        return initializer

    def _normalize(self, x, gamma, beta):
        mean, variance = ops.moments(x, axes=(0, 1, 2))  # over the layer's own filters
        return (x - mean) * ops.rsqrt(variance + self.epsilon) * gamma + beta

    def call(self, kernel):
        return self.activate(self.pre_activation(kernel))

    def activate(self, x):
        """The output activation: identity, or `tanh` with `output_activation="tanh"`."""
        return ops.tanh(x) if self.output_activation == "tanh" else x

    def pre_activation(self, kernel):
        """The last convolution's output, before `output_activation`, in the kernel's shape.

        Args:
            kernel: A conv kernel `(k, k, c, n)` or a dense kernel `(c, n)`.

        Returns:
            A tensor of the kernel's shape.
        """
        dense = len(kernel.shape) == 2
        if dense:
            x = ops.reshape(ops.transpose(kernel), (kernel.shape[1], 1, 1, kernel.shape[0]))
        else:
            x = ops.transpose(kernel, (3, 0, 1, 2))  # (n, k, k, c): n filters as images
        for conv_kernel, gamma, beta in zip(
            self.conv_kernels[:2], self.gammas, self.betas, strict=True
        ):
            x = ops.conv(x, conv_kernel, padding="same")
            x = ops.relu(self._normalize(x, gamma, beta))
        x = ops.conv(x, self.conv_kernels[2], padding="same") + self.output_bias
        if dense:
            return ops.transpose(ops.reshape(x, (kernel.shape[1], kernel.shape[0])))
        return ops.transpose(x, (1, 2, 3, 0))

    def compute_output_shape(self, kernel_shape):
        return kernel_shape

    def get_config(self):
        return {
            **super().get_config(),
            "width": self.width,
            "epsilon": self.epsilon,
            "initialization": self.initialization,
            "output_activation": self.output_activation,
        }
