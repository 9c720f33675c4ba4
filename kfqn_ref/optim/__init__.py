"""Optimizers over a :class:`kfqn_ref.nn.Sequential`: one protocol (``base``), K-BFGS, baselines."""

from kfqn_ref.optim.base import NonFiniteError, Optimizer, load_state, save_state
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
from kfqn_ref.optim.kfac import KFAC, DampingSplit, KFACConfig
from kfqn_ref.optim.shampoo import Shampoo, ShampooConfig

__all__ = [
    "KBFGS",
    "KBFGSL",
    "KFAC",
    "Adam",
    "AdamConfig",
    "DampingSplit",
    "KBFGSConfig",
    "KBFGSDampingSplit",
    "KBFGSLConfig",
    "KBFGSState",
    "KBFGSVariant",
    "KFACConfig",
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
    "load_state",
    "save_state",
]
