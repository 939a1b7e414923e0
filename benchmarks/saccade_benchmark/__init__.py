"""The benchmark that ``saccade benchmark`` runs: latency, memory and scaling of the saccade model
against the resnet18 baselines and the proxy-only CNN (:mod:`.measure`), the report's tables and
plot (:mod:`.report`), and how memory is measured (:mod:`.memory`).

It lives beside the repository's other benchmarks rather than in the library; the command finds
it in the source checkout it is installed from.
"""

from .measure import run_benchmark, skip_reason
from .report import write

__all__ = ["run_benchmark", "skip_reason", "write"]
