"""A fake Asana API (real HTTP server on localhost) for the test suite and benchmarks.

Usage::

    from tests.fake_asana import FakeAsana

    with FakeAsana() as fake:
        requests.get(f"{fake.api_url}/workspaces",
                     headers={"Authorization": f"Bearer {fake.pat}"})
"""

from .dataset import Dataset, build_dataset
from .oauth import TokenRequest
from .server import FakeAsana, RecordedRequest

__all__ = [
    "Dataset",
    "FakeAsana",
    "RecordedRequest",
    "TokenRequest",
    "build_dataset",
]
