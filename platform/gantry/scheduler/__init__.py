"""The scheduler: one leader (gantry.coord.LeaderLease) reconciles each function's desired
instances with the actual ones, places new instances on nodes and reaps dead ones."""
from .scheduler import Scheduler
from .settings import SchedulerSettings

__all__ = ["Scheduler", "SchedulerSettings"]
