"""What the tests, the fuzz target and the benchmarks share; one module a job:

- ``http``: requests as bytes, and reading responses off a socket (``ResponseReader``);
- ``live``: an in-process ``Server`` and the ways to reach it (``Live``, ``exchange``);
- ``apps``: applications the tests serve;
- ``process``: a command run as a process of its own (``Process``), with its output in
  files and a deadline on every wait;
- ``net``: free ports, and whether one accepts connections;
- ``load``: client threads that keep a server busy while a test changes it;
- ``waiting``: waiting on a condition against a deadline (``wait_for``);
- ``parsing`` and ``corpus``: the parser driven like the worker loop (``drive``), and the
  request-smuggling corpus.

``http``, ``net``, ``process`` and ``waiting`` use the standard library only: the
benchmarks import them with any Python, without wsgipool installed.
"""
