"""The command line's implementation, one module per command family (the entry point and the parser stay
in :mod:`neurocore.cli`). :mod:`neurocore._cli._explain` is ``neurocore explain`` over the method registry,
which the ``dissect``, ``hint`` and ``www`` commands call as aliases."""
