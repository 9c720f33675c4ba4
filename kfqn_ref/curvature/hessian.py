"""Exact Hessians and generalised Gauss–Newton matrices of tiny nets, by ``autograd``.

Everything here differentiates the model's own functional forward (``model.loss_function``,
``model.output_function`` and the layers' pure ``apply``) with ``autograd``: no hand-written
backward pass is involved, so these are the independent reference for the structure formulas and
the Kronecker factors. Equation numbers refer to ``docs/derivations/hessian-structure.md``.

Parameter ordering (conventions §5)
-----------------------------------
``theta`` concatenates the trainable layers in network order, each layer's homogeneous weight
``W~ = [W | b]`` ``(d_out, D+1)`` as its column-major ``vec`` (entry ``(i, j)`` at ``i + j d_out``).
A layer block is then ``(d_out (D+1))^2`` and reads ``A kron G``.

Pre-activation ordering
-----------------------
Per-sample pre-activation Hessians are over the flattened ``h_n``: dense ``h_n`` ``(d_out,)``;
conv ``h_n`` as in the records, ``(P, c_out)`` (``P`` output positions) flattened row-major, i.e.
index ``p c_out + c`` for position ``p`` (``p = i W_out + j``) and channel ``c``. Block
``(p, p')`` of size ``c_out x c_out`` is ``d2 l_n / dh_{n,p} dh_{n,p'}``.

Every routine refuses a matrix side above :data:`MAX_EXPLICIT_PARAMETERS` (``ValueError``).

``layer`` arguments index ``model.layers`` (every entry, trainable or not) and must name a
trainable layer (:func:`trainable_position`).

autograd differentiates NumPy code, so the routines that call it take host (NumPy) arrays only
(``TypeError`` for CuPy or other device arrays, ``docs/backends.md``); :func:`structure_block`
runs on any backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import autograd
import autograd.numpy as anp
import numpy as np

from kfqn_ref._checks import check_float_array, check_host_array, check_instance, check_int
from kfqn_ref.backend import Array, xp_of
from kfqn_ref.curvature.factors import as_positions
from kfqn_ref.curvature.kronecker import unvec_unchecked, vec_unchecked

if TYPE_CHECKING:
    from kfqn_ref.nn import LayerRecord, Sequential

#: Largest side of an explicit Hessian/GGN: 2000^2 float64 entries are 32 MB and take about
#: 2000 reverse passes (seconds to tens of seconds on tiny nets). Larger curvature matrices should
#: be used through Hessian-vector products (``autograd.make_hvp``) or Kronecker factors
#: (:mod:`kfqn_ref.curvature.factors`).
MAX_EXPLICIT_PARAMETERS = 2000


def _check_explicit_size(size: int, what: str) -> None:
    """``ValueError`` unless an explicit ``size x size`` matrix is within the size limit."""
    if size > MAX_EXPLICIT_PARAMETERS:
        raise ValueError(
            f"{what} would be an explicit {size} x {size} matrix, above MAX_EXPLICIT_PARAMETERS = "
            f"{MAX_EXPLICIT_PARAMETERS} (memory grows as n^2 and autograd needs n reverse passes); "
            "use Hessian-vector products (autograd.make_hvp on model.loss_function) or the "
            "Kronecker factors of kfqn_ref.curvature.factors instead"
        )


def trainable_position(model: Sequential, layer: int) -> int:
    """Return the position of ``model.layers[layer]`` among the trainable layers.

    ``layer`` indexes ``model.layers`` (every entry, trainable or not); the position returned
    indexes ``model.weights()`` (``model.trainable_indices[position] == layer``). ``TypeError``
    unless ``layer`` is an int, ``ValueError`` if it is out of range or names a layer without
    parameters.
    """
    layer = check_int("layer", layer, minimum=0, maximum=len(model.layers) - 1)
    if layer not in model.trainable_indices:
        raise ValueError(
            f"layer {layer} ({type(model.layers[layer]).__name__}) has no parameters; trainable "
            f"layers are {list(model.trainable_indices)}"
        )
    return list(model.trainable_indices).index(layer)


def flatten_weights(weights: list[Array]) -> Array:
    """``theta = [vec(W~_1); vec(W~_2); ...]`` (column-major vec per layer), ``(n,)``."""
    return anp.concatenate([vec_unchecked(weight) for weight in weights])


def unflatten_weights(theta: Array, shapes: list[tuple[int, int]]) -> list[Array]:
    """Inverse of :func:`flatten_weights` for weight shapes ``shapes``; runs under autograd."""
    weights, start = [], 0
    for rows, cols in shapes:
        weights.append(unvec_unchecked(theta[start : start + rows * cols], (rows, cols)))
        start += rows * cols
    return weights


class _Parametrisation(NamedTuple):
    """A point ``theta`` ``(n,)`` and the map ``theta -> list of W~`` (differentiable)."""

    theta: np.ndarray
    weights_of: object


def _check_on_host(model: Sequential, X, T, what: str) -> None:
    """``TypeError`` unless ``X``, ``T`` and the weights are NumPy arrays (autograd's only kind)."""
    check_host_array("X", X, what)
    check_host_array("T", T, what)
    for position, weight in enumerate(model.weights()):
        check_host_array(f"model.weights()[{position}]", weight, what)


def _all_parameters(model, what: str) -> _Parametrisation:
    """``theta`` over all layers (module docstring ordering); refused above the size limit."""
    weights = model.weights()
    theta = flatten_weights(weights)
    _check_explicit_size(theta.size, what)
    shapes = [weight.shape for weight in weights]
    return _Parametrisation(theta, lambda t: unflatten_weights(t, shapes))


def _layer_parameters(model, layer, what: str) -> _Parametrisation:
    """``vec(W~)`` of one trainable layer, the other weights held fixed."""
    position = trainable_position(model, layer)
    weights = model.weights()
    weight = weights[position]
    _check_explicit_size(weight.size, f"{what} of layer {layer}")

    def weights_of(w):
        return weights[:position] + [unvec_unchecked(w, weight.shape)] + weights[position + 1 :]

    return _Parametrisation(vec_unchecked(weight), weights_of)


def _hessian(model, X, T, parameters: _Parametrisation):
    """``d2 f / d theta^2`` of the mean loss by ``autograd.hessian`` of ``model.loss_function``."""

    def mean_loss(theta):
        return model.loss_function(parameters.weights_of(theta), X, T, anp)

    return autograd.hessian(mean_loss)(parameters.theta)


def full_hessian(model: Sequential, X: Array, T: Array) -> Array:
    """Return ``d2 f / d theta^2`` ``(n, n)`` of the mean minibatch loss ``f``.

    ``theta`` is ordered layer by layer (module docstring); the diagonal blocks are the
    :func:`layer_hessian` blocks (eq. 6).
    """
    _check_on_host(model, X, T, "full_hessian")
    return _hessian(model, X, T, _all_parameters(model, "the full Hessian"))


def layer_hessian(model: Sequential, X: Array, T: Array, layer: int) -> Array:
    """Return one layer's diagonal block ``d2 f / d vec(W~)^2`` (eq. 3, 4).

    ``(n_l, n_l)`` with ``n_l = d_out (D+1)``; ``layer`` indexes ``model.layers`` (every entry)
    and must name a trainable layer (:func:`trainable_position`).
    """
    _check_on_host(model, X, T, "layer_hessian")
    return _hessian(model, X, T, _layer_parameters(model, layer, "the Hessian block"))


def _sample_loss_hessian(loss, z_n, t_n):
    """Return ``d2 l_n / dz_n^2`` ``(d_z, d_z)`` by autograd; ``t_n`` is a batch of one target."""
    return autograd.hessian(lambda z: loss.mean_value(z[None], t_n, anp))(z_n)


def _ggn(model, X, T, parameters: _Parametrisation):
    """Return ``(1/N) sum_n J_n^T (d2 l_n / dz_n^2) J_n``, ``J_n = dz_n / d theta`` (eq. 5)."""

    def outputs(theta):
        return model.output_function(parameters.weights_of(theta), X, anp)

    z = outputs(parameters.theta)  # output_function validates X
    model.loss.check_targets(z, T)  # the validation model.loss_function runs for _hessian
    jacobians = autograd.jacobian(outputs)(parameters.theta)  # (N, d_z, n)
    loss_hessians = np.stack(
        [_sample_loss_hessian(model.loss, z[n], T[n : n + 1]) for n in range(len(z))]
    )
    return np.einsum("nip,nij,njq->pq", jacobians, loss_hessians, jacobians, optimize=True) / len(z)


def full_ggn(model: Sequential, X: Array, T: Array) -> Array:
    """Return the generalised Gauss–Newton matrix of the mean loss over ``theta``, ``(n, n)``.

    ``GGN = (1/N) sum_n J_n^T (d2 l_n / dz_n^2) J_n``, ``J_n = dz_n / d theta`` (eq. 5): the
    Jacobians and the loss Hessians both come from autograd (not from the losses' closed forms).
    """
    _check_on_host(model, X, T, "full_ggn")
    return _ggn(model, X, T, _all_parameters(model, "the full GGN"))


def layer_ggn(model: Sequential, X: Array, T: Array, layer: int) -> Array:
    """Return one layer's diagonal block of the GGN, ``(n_l, n_l)`` (eq. 5).

    ``layer`` as in :func:`layer_hessian` (an index into ``model.layers``).
    """
    _check_on_host(model, X, T, "layer_ggn")
    return _ggn(model, X, T, _layer_parameters(model, layer, "the GGN block"))


def _run_layers(model, weights, x, start, stop, xp):
    """Apply ``model.layers[start:stop]`` to ``x``; trainable ones use their ``weights`` entry."""
    position = dict(zip(model.trainable_indices, range(len(weights)), strict=True))
    for index in range(start, stop):
        layer = model.layers[index]
        x = layer.apply(weights[position[index]], x, xp) if layer.trainable else layer.apply(x, xp)
    return x


def _flatten_preactivation(h_n):
    """One sample's layer output -> ``(d_out,)`` or, from conv ``(c, H_out, W_out)``, ``(P c,)``.

    Conv index ``p c_out + c`` with ``p = i W_out + j``: the record layout ``(P, c_out)`` row-major.
    """
    return h_n if h_n.ndim == 1 else h_n.reshape(h_n.shape[0], -1).T.reshape(-1)


def _unflatten_preactivation(u, sample_shape):
    """Invert :func:`_flatten_preactivation`, adding a batch axis: ``(1, *sample_shape)``."""
    if len(sample_shape) == 1:
        return u[None]
    channels, height, width = sample_shape
    return u.reshape(height * width, channels).T.reshape(1, channels, height, width)


class _SampleLossesOfPreactivation(NamedTuple):
    """What the per-sample pre-activation routines need.

    ``h``: the layer outputs ``(N, d_out)`` or ``(N, c, H_out, W_out)``; ``output_of(u)``: the
    network output ``(1, d_z)`` of ONE sample as a function of its flattened pre-activation ``u``
    (the layers after ``layer``, weights fixed); ``targets(n)``: sample ``n``'s targets, a batch of
    one.
    """

    h: np.ndarray
    output_of: object
    targets: object


def _sample_losses_of_preactivation(model, X, T, layer) -> _SampleLossesOfPreactivation:
    position = trainable_position(model, layer)
    model.loss.check_targets(model.forward(X), T)  # validates X (dtype, shape) and T
    weights = model.weights()
    h = model.layers[layer].apply(
        weights[position], _run_layers(model, weights, X, 0, layer, np), np
    )
    _check_explicit_size(h[0].size, f"the per-sample pre-activation Hessian of layer {layer}")

    def output_of(u):
        x = _unflatten_preactivation(u, h.shape[1:])
        return _run_layers(model, weights, x, layer + 1, len(model.layers), anp)

    return _SampleLossesOfPreactivation(h, output_of, lambda n: T[n : n + 1])


def preactivation_hessians(model: Sequential, X: Array, T: Array, layer: int) -> Array:
    """Per-sample ``d2 l_n / dh_n^2``: dense ``(N, d_out, d_out)``, conv ``(N, P c_out, P c_out)``.

    ``l_n`` is sample ``n``'s loss (not divided by ``N``) as a function of the pre-activation of
    ``model.layers[layer]`` with all weights fixed (eq. 3, 4); conv ordering ``p c_out + c``
    (module docstring).
    Computed sample by sample with ``autograd.hessian`` (valid because no layer mixes samples).
    """
    _check_on_host(model, X, T, "preactivation_hessians")
    setup = _sample_losses_of_preactivation(model, X, T, layer)

    def sample_hessian(n):
        def sample_loss(u):
            return model.loss.mean_value(setup.output_of(u), setup.targets(n), anp)

        return autograd.hessian(sample_loss)(_flatten_preactivation(setup.h[n]))

    return np.stack([sample_hessian(n) for n in range(setup.h.shape[0])])


def preactivation_ggns(model: Sequential, X: Array, T: Array, layer: int) -> Array:
    """Per-sample GGN w.r.t. the pre-activation, ``Q_n = J_n^T (d2 l_n / dz_n^2) J_n`` (eq. 5).

    ``J_n = dz_n / dh_n`` and ``d2 l_n / dz_n^2`` both by autograd; shapes and ordering as
    :func:`preactivation_hessians`.
    """
    _check_on_host(model, X, T, "preactivation_ggns")
    setup = _sample_losses_of_preactivation(model, X, T, layer)

    def sample_ggn(n):
        u = _flatten_preactivation(setup.h[n])
        jacobian = autograd.jacobian(lambda v: setup.output_of(v)[0])(u)
        loss_hessian = _sample_loss_hessian(model.loss, setup.output_of(u)[0], setup.targets(n))
        return jacobian.T @ loss_hessian @ jacobian

    return np.stack([sample_ggn(n) for n in range(setup.h.shape[0])])


def structure_block(record: LayerRecord, preactivation_hessians: Array) -> Array:
    """Evaluate the structure formula of a layer block (eq. 3, 4).

    Inputs: a record (``a``; its ``h`` fixes N, P and c_out) and the per-sample pre-activation
    Hessians.

    Dense (eq. 3), ``record.a`` ``(N, D+1)``, Hessians ``(N, d_out, d_out)``:

        (1/N) sum_n (a~_n a~_n^T) kron (d2 l_n / dh_n^2)

    Conv (eq. 4), ``record.a`` ``(N, P, D+1)``, Hessians ``(N, P c_out, P c_out)`` (index
    ``p c_out + c``):

        (1/N) sum_n sum_{p,p'} (a~_{n,p} a~_{n,p'}^T) kron (d2 l_n / dh_{n,p} dh_{n,p'})

    Returns ``(d_out (D+1), d_out (D+1))`` over column-major ``vec(W~)``. Passing the pre-activation
    GGNs of :func:`preactivation_ggns` gives the layer's GGN block instead (eq. 5). ``TypeError``
    unless ``record`` is a :class:`~kfqn_ref.nn.LayerRecord` and ``record.a`` and the Hessians are
    float arrays; ``ValueError`` for a NaN or Inf in them, or unless ``record.a`` and ``record.h``
    describe the same samples and positions and the Hessians are ``(N, P c_out, P c_out)`` for
    them (``c_out``: the last axis of ``record.h``).
    """
    from kfqn_ref.nn import LayerRecord  # imported here: an import cycle at load time

    check_instance("record", record, LayerRecord)
    a = as_positions("record.a", check_float_array("record.a", record.a))
    h = as_positions("record.h", record.h)
    n_samples, n_positions, width = a.shape
    if h.shape[:2] != a.shape[:2]:
        raise ValueError(
            f"record.h {tuple(record.h.shape)} and record.a {tuple(record.a.shape)} must have the "
            "same samples N (and positions P for a conv record)"
        )
    channels = h.shape[2]
    side = n_positions * channels
    shape = tuple(check_float_array("preactivation_hessians", preactivation_hessians).shape)
    if shape != (n_samples, side, side):
        raise ValueError(
            f"preactivation_hessians must have shape (N, P c_out, P c_out) = "
            f"{(n_samples, side, side)} for record.a {tuple(record.a.shape)} and record.h "
            f"{tuple(record.h.shape)} (N, P and c_out = d_out taken from the record), got {shape}"
        )
    blocks = preactivation_hessians.reshape(n_samples, n_positions, channels, n_positions, channels)
    # block[d, c, e, f] = (1/N) sum_n sum_{p,q} a[n,p,d] a[n,q,e] H_n[p c_out + c, q c_out + f];
    # (d, c) flattened row-major is d c_out + c, the column-major vec index of W~[c, d].
    block = xp_of(a).einsum("npd,nqe,npcqf->dcef", a, a, blocks, optimize=True) / n_samples
    size = width * channels
    return block.reshape(size, size)
