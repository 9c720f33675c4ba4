"""The seven methods of ``kfqn-ref compare``, their command-line slugs and their grids.

Each method is tried over a small grid of learning rates, times a grid of dampings ``lambda`` for
the second-order methods (K-BFGS, K-BFGS(L), KFAC); Shampoo keeps its ``eps``, the first-order
methods have no damping. Every other option keeps its default (``docs/optimizers/``), except
KFAC's ``inverse_interval = 5`` (runs here are a few hundred steps, not tens of thousands). The
grid values, the selection rule and why they were chosen: ``docs/cli.md``.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

from kfqn_ref import optim


class Setting(NamedTuple):
    """One point of a method's grid: the learning rate and (second-order methods) the damping."""

    lr: float
    damping: float | None = None

    def label(self) -> str:
        """``lr=0.3 damping=0.03`` (``lr=0.01`` without damping)."""
        return f"lr={self.lr:g}" + ("" if self.damping is None else f" damping={self.damping:g}")

    def slug(self) -> str:
        """``lr0.3_d0.03``: the setting in a file name."""
        return f"lr{self.lr:g}" + ("" if self.damping is None else f"_d{self.damping:g}")


class Method(NamedTuple):
    """An optimizer class, its display name, its grid and whether it runs the ``A`` pre-pass.

    ``prepass``: K-BFGS and K-BFGS(L) set their running ``A`` from one epoch of minibatches before
    the first step (:meth:`kfqn_ref.optim.KBFGS.initialize_A`, the authors' protocol).
    """

    slug: str
    name: str
    optimizer: type
    lrs: tuple[float, ...]
    dampings: tuple[float, ...] = ()
    fixed: tuple[tuple[str, object], ...] = ()
    prepass: bool = False

    def grid(self) -> list[Setting]:
        """Every setting of the grid, learning rate first."""
        if not self.dampings:
            return [Setting(lr) for lr in self.lrs]
        return [Setting(lr, d) for lr, d in itertools.product(self.lrs, self.dampings)]

    def build(self, model, setting: Setting) -> optim.Optimizer:
        """The optimizer of ``setting`` on ``model``."""
        options = dict(self.fixed, lr=setting.lr)
        if setting.damping is not None:
            options["damping"] = setting.damping
        return self.optimizer(model, **options)


METHODS = {
    method.slug: method
    for method in (
        Method("kbfgs", "K-BFGS", optim.KBFGS, (0.3, 1.0), (0.03, 0.3), prepass=True),
        Method("kbfgsl", "K-BFGS(L)", optim.KBFGSL, (0.3, 1.0), (0.03, 0.3), prepass=True),
        Method(
            "kfac", "KFAC", optim.KFAC, (0.1, 0.3), (0.03, 0.3), fixed=(("inverse_interval", 5),)
        ),
        Method("shampoo", "Shampoo", optim.Shampoo, (0.3, 1.0)),
        Method("adam", "Adam", optim.Adam, (0.003, 0.01, 0.03)),
        Method("rmsprop", "RMSprop", optim.RMSprop, (0.001, 0.003, 0.01)),
        Method("sgd", "SGD-momentum", optim.SGDMomentum, (0.01, 0.03, 0.1)),
    )
}
