from __future__ import annotations

import pytest

from .media import Stream, make_stream


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> Stream:
    return make_stream(tmp_path_factory.mktemp("source") / "source.flv")
