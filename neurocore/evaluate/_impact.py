"""Former home of neuron replacement, Top Impact and the area chart; kept so old imports work.

Neuron replacement and heads live in :mod:`neurocore.probe._replace`, Top Impact in
:mod:`neurocore.evaluate._top_impact`, the shared input handling in :mod:`neurocore.evaluate._inputs`,
the area chart in :mod:`neurocore.report._figures`.
"""

from neurocore.evaluate._inputs import TEMPERATURE  # noqa: F401
from neurocore.evaluate._top_impact import DEFAULT_BETAS, TopImpact, top_impact, top_impact_from_impacts  # noqa: F401
from neurocore.probe._replace import Head, head_after, replace_units  # noqa: F401
from neurocore.report._figures import activation_area_chart  # noqa: F401
