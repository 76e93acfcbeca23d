"""Training jobs: a SQLite job store, a runner that trains in child processes, and the worker they run."""

from monailabel_server.jobs.manager import JobManager
from monailabel_server.jobs.store import JobEvent, JobRecord, JobStore

__all__ = ["JobManager", "JobStore", "JobRecord", "JobEvent"]
