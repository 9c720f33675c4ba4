"""Optimizers over a :class:`kfqn_ref.nn.Sequential`: one protocol (``base``), K-BFGS, baselines.

State files: ``state_io``.
"""

from kfqn_ref.optim.base import NonFiniteError, Optimizer
from kfqn_ref.optim.first_order import (
    Adam,
    AdamConfig,
    MomentumForm,
    RMSprop,
    RMSpropConfig,
    SGDMomentum,
    SGDMomentumConfig,
)
from kfqn_ref.optim.kbfgs import (
    KBFGS,
    KBFGSL,
    KBFGSConfig,
    KBFGSDampingSplit,
    KBFGSLConfig,
    KBFGSState,
    KBFGSVariant,
    StepDiagnostics,
)
from kfqn_ref.optim.kfac import (
    KFAC,
    KFACApproximation,
    KFACAveraging,
    KFACConfig,
    KFACDampingSplit,
    TargetSource,
)
from kfqn_ref.optim.shampoo import Shampoo, ShampooConfig
from kfqn_ref.optim.state_io import load_state, save_state

__all__ = [
    "KBFGS",
    "KBFGSL",
    "KFAC",
    "Adam",
    "AdamConfig",
    "KBFGSConfig",
    "KBFGSDampingSplit",
    "KBFGSLConfig",
    "KBFGSState",
    "KBFGSVariant",
    "KFACApproximation",
    "KFACAveraging",
    "KFACConfig",
    "KFACDampingSplit",
    "MomentumForm",
    "NonFiniteError",
    "Optimizer",
    "RMSprop",
    "RMSpropConfig",
    "SGDMomentum",
    "SGDMomentumConfig",
    "Shampoo",
    "ShampooConfig",
    "StepDiagnostics",
    "TargetSource",
    "load_state",
    "save_state",
]
