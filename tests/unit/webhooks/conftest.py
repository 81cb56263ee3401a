from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.receiver import Receiver, receiving


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving() as running:
        yield running
