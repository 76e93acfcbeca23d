"""What a job's worker process and the server agree on: the event line mark and the exit codes.

Kept apart from ``worker`` so that the server imports it without importing the worker module, which
runs as ``python -m monailabel_server.jobs.worker``.
"""

__all__ = ["EVENT_MARK", "EXIT_ERROR", "EXIT_CANCELLED"]

#: prefix of the stdout lines that carry a JSON event
EVENT_MARK = "@@monailabel-event "
#: the job raised: its message is the last event
EXIT_ERROR = 2
#: the job stopped on a cancel request
EXIT_CANCELLED = 3
