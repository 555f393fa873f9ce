"""Process supervision: a supervisor process binds the listening sockets once and runs
server processes on them.

- ``reloader``: ``--reload``, one server process at a time, restarted (a new program, by
  ``exec``) when the application's source changes.
- ``workers``: ``--workers``, N worker processes forked from the supervisor, kept running,
  recycled, restarted on ``SIGHUP``.
- ``process``: what both use: handing sockets to a child, stopping a child, exit reasons,
  reopening log files.

``Server`` (a single process) imports nothing from here: the supervisors run servers, not
the other way round.
"""
