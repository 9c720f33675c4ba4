"""kfqn_ref: the reference NumPy implementation of Kronecker-factored quasi-Newton methods.

K-BFGS and K-BFGS(L) (Goldfarb, Ren & Bahamou 2020; Ren, Bahamou & Goldfarb 2022) for dense and
convolutional layers, the curvature they approximate, and the paper's baselines. Conventions
(shapes, vec order, loss reduction, dtypes) are in ``docs/conventions.md``.
"""

__version__ = "0.1.0"
