"""Parallel-in-time solves of recurrences: ``seqlab.scan(..., implementation="parallel")``.

Linear-state cells (``cells.MinGRU``, ``cells.MinLSTM``) are solved by one associative
scan; every other cell by Newton's method over the whole trajectory, each iteration one
associative scan (DEER / ParaRNN), with damping, a tolerance and a fallback to the
sequential scan. ``Parallel`` holds the settings; ``convergence`` returns a solve's record
(iterations, converged, residuals) for analysis. ``seqlab/parallel/_solve.py`` explains
the method and its gradients.
"""

from seqlab.parallel._api import Convergence as Convergence
from seqlab.parallel._api import convergence as convergence
from seqlab.parallel._api import run_parallel as run_parallel
from seqlab.parallel._api import scan_parallel as scan_parallel
from seqlab.parallel._api import settle_parallel as settle_parallel
from seqlab.parallel._options import JACOBIANS as JACOBIANS
from seqlab.parallel._options import Parallel as Parallel

__all__ = [
    "Parallel",
    "convergence",
    "Convergence",
    "scan_parallel",
    "run_parallel",
    "settle_parallel",
    "JACOBIANS",
]
