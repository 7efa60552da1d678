"""One running home of the demo community, for the dashboard tests that need a real gateway."""

import pytest

from tests.dashboard.community import DEMO_HOMES, community


@pytest.fixture
async def home(tmp_path):
    async with community(tmp_path, homes=DEMO_HOMES[:1]) as nodes:
        yield nodes["home-1"]
