"""neurocore: explain what individual neurons of vision networks do.

The compiled kernels are reached through :mod:`neurocore.ops`; :mod:`neurocore.reference` holds
their pure-torch twins (the test oracle and the benchmark baseline).
"""

from neurocore import ops, reference
from neurocore._extension import ExtensionError, built_with_cuda

__version__ = "0.1.0"

__all__ = ["ops", "reference", "built_with_cuda", "ExtensionError", "__version__"]
