"""Helpers shared by the test suites (importable because pytest puts ``tests/`` on the path).

- ``support.env``: an isolated ``LTR_HOME`` (settings, MLflow store) for a test or a module.
- ``support.datasets``: the real benchmark datasets beside the project, or a skip.
- ``support.models``: tiny real models exported into a model store and registered in MLflow.
- ``support.net``: a free loopback port, polling until a condition holds.
- ``support.service``: the rank service under uvicorn in a thread, and traffic for it.
- ``support.serving``: the rank-service tests' models with known weights, stores and requests.
- ``support.redis``: clients of the shared Redis (or a skip), key clean-up, a private server.
- ``support.pipeline``: the DAG tests' pipeline configs, raw-file landing and DAG runs.

Fixtures stay in the ``conftest.py`` files and the test modules; these are plain functions
and classes, imported as ``from support.x import y``.
"""
