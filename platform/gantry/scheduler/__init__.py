"""The scheduler: one leader (gantry.coord.LeaderLease) reconciles each function's desired
instances with the actual ones, places new instances on nodes and reaps dead ones."""

__all__ = ["Scheduler", "SchedulerSettings"]


def __getattr__(name: str):
    """Imported on first use, so that the pure modules (gpulease, reclaim, nodes ...) load
    without Redis's client: scripts/gpu_check.py runs on GPU machines that have none."""
    if name == "Scheduler":
        from .scheduler import Scheduler
        return Scheduler
    if name == "SchedulerSettings":
        from .settings import SchedulerSettings
        return SchedulerSettings
    raise AttributeError(f"module 'gantry.scheduler' has no attribute {name!r}")
