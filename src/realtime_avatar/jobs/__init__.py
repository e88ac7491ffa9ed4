"""Video jobs: the records, the queues (in-process or Dramatiq on Redis), the runner and
``avatar worker``. The HTTP routes are in ``server/videos_api.py``."""
