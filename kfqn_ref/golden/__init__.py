"""Golden outputs: versioned reference files, and a checker of other implementations.

The checker says where and why another implementation diverges (``docs/golden.md``).

* :mod:`~kfqn_ref.golden.format`: the file format (``<case>.npz`` + ``<case>.json`` validated
  against ``schema.json``), deterministic writing and strict reading;
* :mod:`~kfqn_ref.golden.export`: the cases and ``kfqn-ref golden export``;
* :mod:`~kfqn_ref.golden.check`: ``kfqn-ref golden check``, with the diagnoses of
  :mod:`~kfqn_ref.golden.diagnose`;
* :mod:`~kfqn_ref.golden.cli`: the ``golden`` command.
"""
