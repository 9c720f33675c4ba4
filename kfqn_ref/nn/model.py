"""``Sequential``: a chain of layers and a loss, with the per-layer records K-BFGS needs.

For a minibatch ``X`` of ``N`` samples and targets ``T`` the model computes the mean loss
``f = (1/N) sum_n l_n`` (conventions §6) and, per trainable layer (in network order), the record of
conventions §4:

* ``a``: the homogeneous inputs ``a~`` (dense ``(N, d_in + 1)``, conv ``(N, P, c_in k_h k_w + 1)``);
* ``h``: the pre-activations ``h = W~ a~`` (dense ``(N, d_out)``, conv ``(N, P, c_out)``);
* ``g``: the per-sample pre-activation gradients ``g_n = dl_n/dh_n = N df/dh_n`` (shape of ``h``);
* ``grad``: ``df/dW~ = (1/N) sum_n sum_p g_{n,p} a~_{n,p}^T`` (shape of ``W~``).

The backward pass propagates per-sample output gradients ``dl_n/dz_n`` (any ``(N, d_out)`` array:
Fisher and GGN code pass sampled-target gradients or Hessian square-root columns through the same
pass). Every sample's loss depends on that sample only, so propagating them gives ``g_n`` directly.

Weights live in the model as a list of homogeneous matrices ``W~ = [W | b]`` (conventions §3),
exchanged with :meth:`Sequential.weights` / :meth:`Sequential.set_weights`; layers hold none, and no
pass stores anything in the model, so every pass can be repeated with the same result.

Checks happen once, at the public methods: ``forward_pass``, ``backward_pass`` and
``set_weights`` validate and call their cores ``forward_pass_unchecked``,
``backward_pass_unchecked`` and ``set_weights_unchecked``, which call the layers' and the loss's
unchecked cores. An optimizer calls the cores for what it already checked: the second pass on a
minibatch that ``forward_backward`` checked, new weights it computed and checked for finiteness.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import DTypeLike

from kfqn_ref import backend
from kfqn_ref._checks import check_bool, check_computed_finite, check_float_array, check_int
from kfqn_ref.backend import Array, resolve_dtype
from kfqn_ref.nn.layers import Layer
from kfqn_ref.nn.losses import Loss


@dataclass(frozen=True, eq=False)
class LayerRecord:
    """The record of one trainable layer (conventions §4); ``grad`` is None if not requested."""

    layer_index: int
    a: object
    h: object
    g: object
    grad: object


@dataclass(frozen=True, eq=False)
class ForwardPass:
    """A forward pass: the output ``z`` and what the backward pass needs.

    ``caches[i]`` is what ``layers[i].forward`` returned besides its output; ``weights`` are the
    weights the pass used (the backward uses them, even if the model's weights changed since);
    ``layers`` are the layers it ran through (``backward_pass`` checks that they match its model's).
    """

    z: object
    caches: tuple
    weights: tuple
    trainable_indices: tuple
    layers: tuple

    @property
    def records(self) -> list:
        """Per trainable layer (network order) a :class:`LayerRecord` with ``a`` and ``h``.

        ``g`` and ``grad`` are None: they come from :meth:`Sequential.backward_pass`.
        """
        return [
            LayerRecord(index, self.caches[index].a, self.caches[index].h, g=None, grad=None)
            for index in self.trainable_indices
        ]


@dataclass(frozen=True, eq=False)
class ForwardBackward:
    """Result of :meth:`Sequential.forward_backward`: mean loss, output ``z`` and the records.

    ``weights`` are the weights the pass used, as in :class:`ForwardPass`: the model's own arrays,
    not copies (no copy per step for an optimizer that only reads them; never write into them).
    """

    loss: float
    output: object
    records: list
    weights: tuple

    @property
    def grads(self) -> list:
        """``df/dW~`` of every trainable layer, in network order (None entries if not computed)."""
        return [record.grad for record in self.records]


def _make_rng(seed) -> np.random.Generator:
    """``Generator(PCG64(seed))`` for an int ``seed >= 0``; a ``Generator`` is used as it is."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.Generator(np.random.PCG64(check_int("seed", seed, minimum=0)))


class Sequential:
    """A chain of layers, applied in order (at least one trainable), followed by a loss.

    ``loss`` is applied to the last layer's output ``z`` ``(N, d_out)``. ``seed`` (an int >= 0 or
    a ``numpy.random.Generator``): ONE ``Generator(PCG64(seed))`` draws the layers' weights in
    network order, each ``W~`` by ``layer.init_weight`` (``docs/nn.md`` §7); same seed, same bits.
    ``dtype`` (float64, the default, or float32): that of the weights and of every array the
    model accepts (no silent casting).
    """

    def __init__(
        self,
        layers: Sequence[Layer],
        loss: Loss,
        seed: int | np.random.Generator = 0,
        dtype: DTypeLike = np.float64,
    ):
        if not isinstance(layers, list | tuple) or not all(isinstance(x, Layer) for x in layers):
            raise TypeError(
                "layers must be a list of kfqn_ref.nn layers (Dense, Conv2d, ReLU, ...)"
            )
        if not isinstance(loss, Loss):
            raise TypeError(
                "loss must be a kfqn_ref.nn loss (SquaredError, SigmoidCrossEntropy, "
                f"SoftmaxCrossEntropy), got {type(loss).__name__}"
            )
        self.layers = tuple(layers)
        self.loss = loss
        self.dtype = resolve_dtype(dtype)
        self.trainable_indices = tuple(i for i, layer in enumerate(self.layers) if layer.trainable)
        if not self.trainable_indices:
            raise ValueError("layers must contain at least one trainable layer (Dense or Conv2d)")
        rng = _make_rng(seed)
        xp = backend.xp()
        self._weights = [
            xp.asarray(self.layers[i].init_weight(rng, self.dtype)) for i in self.trainable_indices
        ]

    def __repr__(self) -> str:
        inner = ", ".join(repr(layer) for layer in self.layers)
        return f"Sequential([{inner}], loss={self.loss!r}, dtype={self.dtype})"

    def _label(self, index: int) -> str:
        """``"Conv2d (layers[2])"``: how error messages name a layer."""
        return f"{type(self.layers[index]).__name__} (layers[{index}])"

    def _per_layer(self, weights) -> list:
        """``weights`` (one per trainable layer) spread over all layers, None for the others."""
        remaining = iter(weights)
        return [next(remaining) if layer.trainable else None for layer in self.layers]

    # -- weights -----------------------------------------------------------------------------------

    def weights(self) -> list[Array]:
        """Return copies of the homogeneous weights ``W~ = [W | b]``, one per trainable layer."""
        return [w.copy() for w in self._weights]

    def set_weights(self, weights: Sequence[Array]) -> None:
        """Replace the weights by copies of ``weights`` (a list of homogeneous ``W~``).

        Checks the count, every shape (``layer.weight_shape``), the dtype (the model's) and that
        every entry is finite before changing anything: a rejected call leaves the model unchanged.
        """
        self._check_weight_count(weights)
        for j, (index, w) in enumerate(zip(self.trainable_indices, weights, strict=True)):
            check_float_array(f"weights[{j}] for {self._label(index)}", w, dtype=self.dtype)
        self._check_weight_shapes(weights)
        self.set_weights_unchecked(weights)

    def set_weights_unchecked(self, weights: Sequence[Array]) -> None:
        """As :meth:`set_weights`, without argument checks (for trusted callers)."""
        self._weights = [w.copy() for w in weights]

    def weight_arrays(self) -> tuple[Array, ...]:
        """The model's own weight arrays, not copies (as :attr:`ForwardPass.weights`).

        Read them, never write into them: the model never writes into its arrays (it replaces
        them), so the tuple stays a snapshot of the weights of this moment.
        """
        return tuple(self._weights)

    def adopt_weights_unchecked(self, weights: Sequence[Array]) -> None:
        """Make ``weights`` the model's own arrays, without copying or checking them.

        For arrays that nothing else will write into: an optimizer's new weights (fresh arrays of
        its step) or a :meth:`weight_arrays` snapshot put back.
        """
        self._weights = list(weights)

    def _check_weight_count(self, weights) -> None:
        """Check for a list or tuple (or autograd's box of one), one entry per trainable layer."""
        count = len(self.trainable_indices)
        expected = f"a list of {count} homogeneous matrices [W | b] (one per trainable layer)"
        if not hasattr(weights, "__len__") or hasattr(weights, "shape"):
            raise TypeError(f"weights must be {expected}, got {type(weights).__name__}")
        if len(weights) != count:
            raise ValueError(f"weights must be {expected}, got {len(weights)}")

    def _check_weight_shapes(self, weights) -> None:
        """Check the shapes only (``weights`` may be autograd boxes); after the count check."""
        for j, (index, w) in enumerate(zip(self.trainable_indices, weights, strict=True)):
            expected = self.layers[index].weight_shape
            if tuple(getattr(w, "shape", ())) != expected:
                raise ValueError(
                    f"weights[{j}] for {self._label(index)} must have shape {expected} "
                    f"(homogeneous [W | b]), got {getattr(w, 'shape', type(w).__name__)}"
                )

    # -- input checks ------------------------------------------------------------------------------

    def output_shape(self, input_shape: tuple) -> tuple:
        """Return the output shape for inputs of ``input_shape``.

        Raises ``ValueError`` naming the first layer whose input does not fit.
        """
        shape = tuple(input_shape)
        for index, layer in enumerate(self.layers):
            shape = layer.output_shape(shape, self._label(index))
        return shape

    def _check_input(self, X) -> None:
        """``X``: an array of the model's dtype, finite, ``N >= 1``, of a shape the layers take."""
        check_float_array("X", X, dtype=self.dtype)
        if X.ndim == 0 or X.shape[0] < 1:
            raise ValueError(f"X must hold at least one sample (first axis N >= 1), got {X.shape}")
        self.output_shape(X.shape)

    # -- passes ------------------------------------------------------------------------------------

    def forward(self, X: Array) -> Array:
        """Network outputs ``z`` for inputs ``X`` (no caches kept)."""
        self._check_input(X)
        z = self._apply_layers(self._weights, X, backend.xp_of(X))
        check_computed_finite("network output z", z)
        return z

    def output_function(self, weights: Sequence[Array], X: Array, xp) -> Array:
        """Network outputs ``z`` as a pure function of ``weights`` (list of ``W~``).

        Uses each layer's ``apply`` (the same forward the passes use), so with
        ``xp = autograd.numpy`` it can be differentiated w.r.t. the weights. ``X`` must be a plain
        array.
        """
        self._check_input(X)
        self._check_weight_count(weights)
        self._check_weight_shapes(weights)
        return self._apply_layers(weights, X, xp)

    def loss_function(self, weights: Sequence[Array], X: Array, T: Array, xp):
        """Mean loss ``f(W~_1, ..., W~_L) = (1/N) sum_n l_n`` as a pure function of ``weights``."""
        z = self.output_function(weights, X, xp)
        self.loss.check_targets(z, T)
        return self.loss.mean_value(z, T, xp)

    def _apply_layers(self, weights, X, xp):
        x = X
        for layer, weight in zip(self.layers, self._per_layer(weights), strict=True):
            x = layer.apply(weight, x, xp) if layer.trainable else layer.apply(x, xp)
        return x

    def forward_pass(self, X: Array) -> ForwardPass:
        """Forward pass keeping every layer's cache; its ``records`` give ``a~`` and ``h``.

        Raises :class:`~kfqn_ref._checks.NonFiniteError` if the output ``z`` is not finite.
        """
        self._check_input(X)
        return self.forward_pass_unchecked(X)

    def forward_pass_unchecked(self, X: Array) -> ForwardPass:
        """As :meth:`forward_pass`, without argument checks (for trusted callers)."""
        weights = tuple(self._weights)
        caches = []
        x = X
        for layer, weight in zip(self.layers, self._per_layer(weights), strict=True):
            arguments = (weight, x) if layer.trainable else (x,)
            x, cache = layer.forward_unchecked(*arguments)
            caches.append(cache)
        check_computed_finite("network output z", x)
        return ForwardPass(x, tuple(caches), weights, self.trainable_indices, self.layers)

    def backward_pass(
        self, forward_pass: ForwardPass, output_gradients: Array, weight_gradients: bool = True
    ) -> list[LayerRecord]:
        """Propagate per-sample output gradients back: one :class:`LayerRecord` per trainable layer.

        ``output_gradients`` ``(N, d_out)`` are any per-sample ``dl_n/dz_n`` (the loss's gradient, a
        sampled-target gradient, a column of a Hessian square root). The pass stops at the first
        trainable layer (nothing before it is needed) and skips that layer's input gradient. With
        ``weight_gradients=False`` the records' ``grad`` is None (K-BFGS's second pass needs only
        ``h`` and ``g``).
        """
        if not isinstance(forward_pass, ForwardPass):
            raise TypeError(
                f"forward_pass must be the ForwardPass of forward_pass(X), got "
                f"{type(forward_pass).__name__}"
            )
        self._check_same_structure(forward_pass)
        check_bool("weight_gradients", weight_gradients)
        check_float_array("output_gradients", output_gradients, dtype=self.dtype)
        if output_gradients.shape != forward_pass.z.shape:
            raise ValueError(
                f"output_gradients must have the shape of the output, {forward_pass.z.shape}, "
                f"got {output_gradients.shape}"
            )
        return self.backward_pass_unchecked(forward_pass, output_gradients, weight_gradients)

    def backward_pass_unchecked(
        self, forward_pass: ForwardPass, output_gradients: Array, weight_gradients: bool = True
    ) -> list[LayerRecord]:
        """As :meth:`backward_pass`, without argument checks (for trusted callers)."""
        first = self.trainable_indices[0]
        weights = self._per_layer(forward_pass.weights)
        records = []
        dy = output_gradients
        for index in range(len(self.layers) - 1, first - 1, -1):
            layer, cache = self.layers[index], forward_pass.caches[index]
            if not layer.trainable:
                dy = layer.backward(cache, dy)
                continue
            result = layer.backward(
                weights[index],
                cache,
                dy,
                input_gradient=index > first,
                weight_gradient=weight_gradients,
            )
            records.append(LayerRecord(index, cache.a, cache.h, result.g, result.grad))
            dy = result.input_gradient
        records.reverse()
        return records

    def _check_same_structure(self, forward_pass) -> None:
        """``ValueError`` unless ``forward_pass`` ran through layers like this model's.

        Layers match if they are the same objects or of the same type and ``repr`` (the repr of
        every kfqn_ref layer lists its hyperparameters).
        """
        theirs, ours = tuple(forward_pass.layers), self.layers
        if len(theirs) != len(ours):
            raise ValueError(
                f"forward_pass comes from a model with {len(theirs)} layers; this model has "
                f"{len(ours)} (pass a ForwardPass of this model's forward_pass(X))"
            )
        for index, (other, layer) in enumerate(zip(theirs, ours, strict=True)):
            same = other is layer or (type(other) is type(layer) and repr(other) == repr(layer))
            if not same:
                raise ValueError(
                    f"forward_pass comes from a model with a different structure: layers[{index}] "
                    f"is {other!r} there but {layer!r} in this model"
                )

    def forward_backward(
        self, X: Array, T: Array, weight_gradients: bool = True
    ) -> ForwardBackward:
        """Mean loss, output and per-layer records (conventions §4) on the minibatch ``(X, T)``.

        Checks ``X``, then ``z`` as it is produced (:meth:`forward_pass`), then ``T`` against
        ``z``, once each; the loss and the backward pass run unchecked.
        """
        self._check_input(X)
        check_bool("weight_gradients", weight_gradients)
        forward_pass = self.forward_pass_unchecked(X)
        z = forward_pass.z
        self.loss.check_targets(z, T)
        loss = self.loss.value_unchecked(z, T)
        gradients = self.loss.output_gradient_unchecked(z, T)
        records = self.backward_pass_unchecked(forward_pass, gradients, weight_gradients)
        return ForwardBackward(loss=loss, output=z, records=records, weights=forward_pass.weights)
