"""What `make check` leaves out: the `slow` marker, for tests that start painters or paint.

A test is slow when it is marked `@pytest.mark.slow` itself, when it uses a fixture that starts
painter processes or a cluster (`SLOW_FIXTURES`, found through the fixtures it depends on, so a
new test that asks for one is slow without being told), or when its whole module paints or
starts processes (`SLOW_MODULES`). `make check` runs `pytest -m "not slow"`; `make test` runs
everything.
"""

from __future__ import annotations

import pytest

# Fixtures that start worker processes, a Ray cluster or a bot with a painter behind it.
SLOW_FIXTURES = frozenset({"engine", "pool", "cluster"})

# Modules whose tests paint in this process or start the engine's processes in their body.
SLOW_MODULES = frozenset(
    {
        "test_batch.py",
        "test_bf16.py",
        "test_cli.py",
        "test_cli_features.py",
        "test_contract.py",
        "test_cuda.py",
        "test_gpu_check.py",
        "test_lbfgs.py",
        "test_pool.py",
        "test_pool_batch.py",
        "test_precision.py",
        "test_ray_cluster.py",
        "test_ray_loopback.py",
        "test_timelapse.py",
        "test_transfer.py",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in SLOW_MODULES or SLOW_FIXTURES.intersection(
            getattr(item, "fixturenames", ())
        ):
            item.add_marker(pytest.mark.slow)
