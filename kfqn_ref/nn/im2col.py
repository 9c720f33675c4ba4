"""Patch extraction (unfold, ``im2col``) and its adjoint (fold, ``col2im``) for 2-d windows.

A 2-d window operation (convolution, pooling) reads, for every output position ``(i, j)``, the
``k_h x k_w`` entries of the zero-padded input at rows ``i s_h + ki d_h`` and columns
``j s_w + kj d_w`` (``ki < k_h``, ``kj < k_w``; stride ``s``, dilation ``d``, padding ``p``). With
input ``x`` of shape ``(N, C, H, W)`` the output has ``H_out x W_out`` positions (conventions §2):

    H_out = floor((H + 2 p_h - d_h (k_h - 1) - 1) / s_h) + 1        (same for W_out).

Layouts (``K = k_h k_w``, ``P = H_out W_out`` positions, ``D = C K``):

* ``extract_patches(x)`` -> ``(N, H_out, W_out, C, K)``: entry ``[n, i, j, c, ki * k_w + kj]``.
* ``im2col(x)`` -> ``(N, P, D)``: the same numbers, position ``p = i W_out + j`` (row-major) and
  patch index ``c K + ki k_w + kj`` (order ``(c, k_h, k_w)``, as ``torch.nn.functional.unfold``;
  note that ``unfold`` returns the transpose ``(N, D, P)``). This is ``a~`` without its trailing 1
  (conventions §3).

``fold_patches`` / ``col2im`` are the adjoints (transposes) of these linear maps: they scatter-add
every patch entry back to the input position it was read from, and drop the padding, so
``<im2col(x), y> = <x, col2im(y)>`` (``tests/nn/test_im2col.py::test_col2im_is_adjoint_of_im2col``).
Both directions walk the same ``K`` kernel offsets (:meth:`PatchGeometry.offset_slices`): unfold
reads one strided slice per offset, fold adds into the same slice.

``extract_patches`` and ``im2col`` use only slicing, ``pad(mode="constant")``, ``transpose``,
``stack`` and ``reshape``, so they also run with ``xp = autograd.numpy`` on boxed arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

from kfqn_ref._checks import check_float_array, check_int_pair, check_int_tuple
from kfqn_ref.backend import Array, xp_of

#: ``(N, C, H, W)``: the dimensions of an image batch.
IMAGE_DIMS = 4


def _unboxed(array):
    """The array an autograd box wraps (``im2col`` under ``autograd.grad``), else ``array``."""
    while hasattr(array, "_value"):
        array = array._value
    return array


@dataclass(frozen=True)
class PatchGeometry:
    """Kernel size, stride, padding and dilation of a 2-d window operation (each a pair of ints).

    Build it with :meth:`of`, which validates. ``owner`` names the layer in error messages.
    """

    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    owner: str = "im2col"

    @classmethod
    def of(cls, kernel_size, stride=1, padding=0, dilation=1, owner="im2col") -> PatchGeometry:
        """Validate ``kernel_size >= 1``, ``stride >= 1``, ``padding >= 0``, ``dilation >= 1``.

        Each is an int or a pair of ints (``TypeError`` otherwise, ``ValueError`` out of range).
        """
        return cls(
            kernel_size=check_int_pair(f"{owner}: kernel_size", kernel_size, 1),
            stride=check_int_pair(f"{owner}: stride", stride, 1),
            padding=check_int_pair(f"{owner}: padding", padding, 0),
            dilation=check_int_pair(f"{owner}: dilation", dilation, 1),
            owner=owner,
        )

    @property
    def window_size(self) -> int:
        """``K = k_h k_w``, the number of entries of one channel's window."""
        return self.kernel_size[0] * self.kernel_size[1]

    def effective_kernel(self) -> tuple[int, int]:
        """Return the span of the dilated kernel, ``d (k - 1) + 1`` per axis."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel_size, self.dilation, strict=True))

    def output_size(self, height: int, width: int, where: str | None = None) -> tuple[int, int]:
        """``(H_out, W_out)`` with ``H_out = floor((H + 2 p - d (k - 1) - 1) / s) + 1``.

        ``ValueError`` naming ``where`` (default: :attr:`owner`) if the (dilated) kernel is larger
        than the padded input.
        """
        padded = (height + 2 * self.padding[0], width + 2 * self.padding[1])
        span = self.effective_kernel()
        if padded[0] < span[0] or padded[1] < span[1]:
            raise ValueError(
                f"{where or self.owner}: the kernel spans {span} (dilation included) but the "
                f"padded input is only {padded}; expected a padded input at least as large as the "
                "kernel"
            )
        out_height = (padded[0] - span[0]) // self.stride[0] + 1
        out_width = (padded[1] - span[1]) // self.stride[1] + 1
        return out_height, out_width

    def offset_slices(self, out_height: int, out_width: int) -> list[tuple[slice, slice]]:
        """List, per kernel offset ``(ki, kj)`` (row-major), the padded rows and columns it reads.

        Offset ``(ki, kj)`` reads rows ``ki d_h + i s_h`` for ``i < H_out`` and columns
        ``kj d_w + j s_w`` for ``j < W_out``.
        """
        (k_h, k_w), (s_h, s_w), (d_h, d_w) = self.kernel_size, self.stride, self.dilation
        rows = [slice(ki * d_h, ki * d_h + s_h * (out_height - 1) + 1, s_h) for ki in range(k_h)]
        cols = [slice(kj * d_w, kj * d_w + s_w * (out_width - 1) + 1, s_w) for kj in range(k_w)]
        return [(r, c) for r in rows for c in cols]


def extract_patches(x: Array, geometry: PatchGeometry, xp=None, pad_value: float = 0.0) -> Array:
    """Unfold ``x`` ``(N, C, H, W)`` into windows ``(N, H_out, W_out, C, K)``.

    ``out[n, i, j, c, ki k_w + kj] = x_pad[n, c, i s_h + ki d_h, j s_w + kj d_w]`` where ``x_pad``
    is ``x`` padded by ``pad_value`` (0 for convolution and average pooling, ``-inf`` for max
    pooling).
    ``xp`` is the array module (``autograd.numpy`` to differentiate; default ``xp_of(x)``).
    """
    xp = xp_of(x) if xp is None else xp
    _, _, height, width = x.shape
    out_height, out_width = geometry.output_size(height, width)
    (p_h, p_w) = geometry.padding
    if p_h or p_w:
        x = xp.pad(
            x, ((0, 0), (0, 0), (p_h, p_h), (p_w, p_w)), mode="constant", constant_values=pad_value
        )
    x_nhwc = xp.transpose(x, (0, 2, 3, 1))
    slices = [
        x_nhwc[:, rows, cols, :] for rows, cols in geometry.offset_slices(out_height, out_width)
    ]
    return xp.stack(slices, axis=-1)


def fold_patches(patches: Array, input_shape: tuple, geometry: PatchGeometry) -> Array:
    """Adjoint of :func:`extract_patches`: add ``(N, H_out, W_out, C, K)`` into ``(N, C, H, W)``.

    ``out[n, c, y, x] = sum`` of every ``patches[n, i, j, c, k]`` that was read from input position
    ``(y, x)``; entries read from the padding are dropped.
    """
    xp = xp_of(patches)
    n, channels, height, width = input_shape
    out_height, out_width = patches.shape[1], patches.shape[2]
    (p_h, p_w) = geometry.padding
    padded = xp.zeros((n, height + 2 * p_h, width + 2 * p_w, channels), dtype=patches.dtype)
    for k, (rows, cols) in enumerate(geometry.offset_slices(out_height, out_width)):
        padded[:, rows, cols, :] += patches[..., k]
    return padded[:, p_h : p_h + height, p_w : p_w + width, :].transpose(0, 3, 1, 2)


def im2col(x: Array, kernel_size, stride=1, padding=0, dilation=1, *, xp=None) -> Array:
    """Unfold ``x`` ``(N, C, H, W)`` into patch rows ``(N, P, C k_h k_w)`` (zero padding).

    Row ``p = i W_out + j`` of sample ``n`` is the patch read by output position ``(i, j)``, in
    ``(c, ki, kj)`` order: this is the conv layer's ``a~`` without its trailing 1 (conventions §3).
    ``xp`` is the array module (pass ``autograd.numpy`` to differentiate; default ``xp_of(x)``).
    ``x`` must be a finite float64/float32 array with 4 dimensions (``TypeError``/``ValueError``).
    """
    check_float_array("im2col: x", _unboxed(x), ndim=IMAGE_DIMS)
    geometry = PatchGeometry.of(kernel_size, stride, padding, dilation)
    return patches_to_columns(extract_patches(x, geometry, xp))


def col2im(cols: Array, input_shape: tuple, kernel_size, stride=1, padding=0, dilation=1) -> Array:
    """Adjoint of :func:`im2col`: fold ``(N, P, C k_h k_w)`` back into ``(N, C, H, W)``.

    ``input_shape`` is the ``(N, C, H, W)`` shape of the unfolded input. Overlapping patch entries
    are summed; entries that came from the padding are dropped. ``cols`` must be a finite
    float64/float32 array of the shape ``im2col`` gives for ``input_shape`` (``ValueError``).
    """
    check_float_array("col2im: cols", cols, ndim=3)
    input_shape = check_int_tuple("col2im: input_shape", input_shape, IMAGE_DIMS, 1, "(N, C, H, W)")
    geometry = PatchGeometry.of(kernel_size, stride, padding, dilation, owner="col2im")
    n, channels, height, width = input_shape
    out_height, out_width = geometry.output_size(height, width)
    expected = (n, out_height * out_width, channels * geometry.window_size)
    if tuple(cols.shape) != expected:
        raise ValueError(
            f"col2im: cols must have shape {expected} for input_shape {tuple(input_shape)}, "
            f"got {tuple(cols.shape)}"
        )
    return fold_patches(
        columns_to_patches(cols, out_height, out_width, channels), input_shape, geometry
    )


def patches_to_columns(patches: Array) -> Array:
    """Reshape ``(N, H_out, W_out, C, K)`` -> ``(N, P, C K)`` (no copy for contiguous input)."""
    n, out_height, out_width, channels, window = patches.shape
    return patches.reshape((n, out_height * out_width, channels * window))


def columns_to_patches(cols: Array, out_height: int, out_width: int, channels: int) -> Array:
    """Reshape ``(N, P, C K)`` -> ``(N, H_out, W_out, C, K)``, undoing ``im2col``'s last step."""
    n, _, depth = cols.shape
    return cols.reshape((n, out_height, out_width, channels, depth // channels))
