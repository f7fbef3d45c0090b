"""Findings: each way in which a view differs from its spec.

Pure functions of (spec, view), so the monitor workflow computes them deterministically
and an operator can recompute them from any stored view. Rules every kind shares are in
`common`; each kind adds its own in a module of its name.
"""

from models.findings.base import Finding, Severity
from models.findings.common import evaluate, health_of

__all__ = ["Finding", "Severity", "evaluate", "health_of"]
