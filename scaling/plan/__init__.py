"""Planning: each system's fastest feasible training configuration, found by enumerating the
strategy space, refusing what does not fit, pruning on the analytic network and simulating the
best candidates on the flow network."""

from scaling.plan.search import PlanResult, plan
from scaling.plan.space import Candidate, PlanSpace, enumerate_candidates

__all__ = ["Candidate", "PlanResult", "PlanSpace", "enumerate_candidates", "plan"]
