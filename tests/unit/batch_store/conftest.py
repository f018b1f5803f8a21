"""One batch store suite, run against both backends: every test taking `store` or `backend` runs twice.

SQLite gets a fresh file per test; PostgreSQL one server per test run (tests/postgres_server.py) and a
fresh database per test, so each test also creates the schema from nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from server.storage.batches import BatchLimits, BatchStore, open_batch_store
from tests.postgres_server import PostgresServer, start_server
from tests.unit.batch_store.records import LIMITS, FakeClock

_database_names = itertools.count()


@dataclass(frozen=True)
class Backend:
    """Where one test's store lives; `open` opens another store on it, as another replica would."""

    name: str
    url: str
    files_dir: Path

    async def open(self, clock: FakeClock, limits: BatchLimits = LIMITS) -> BatchStore:
        return await open_batch_store(self.url, self.files_dir, limits, clock=clock)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        server = start_server()
    except RuntimeError as err:
        print(f"PostgreSQL batch store tests skipped: {err}")  # noqa: T201 - the reason, in the output
        pytest.skip(f"no PostgreSQL server: {err}")
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    files_dir = tmp_path / "files"
    if request.param == "sqlite":
        return Backend("sqlite", f"sqlite://{tmp_path / 'state' / 'batches.sqlite3'}", files_dir)
    psycopg = pytest.importorskip("psycopg", reason="no PostgreSQL driver: pip install 'wattserve[postgres]'")
    server: PostgresServer = request.getfixturevalue("postgres_server")
    database = f"batches_{next(_database_names)}"
    with psycopg.connect(server.url(), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {database}")
    return Backend("postgres", server.url(database), files_dir)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(backend: Backend, clock: FakeClock) -> AsyncIterator[BatchStore]:
    opened = await backend.open(clock)
    yield opened
    await opened.close()
