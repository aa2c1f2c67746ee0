import os
import sys

# The tests import the stand-in daemon next to them.
sys.path.insert(0, os.path.dirname(__file__))

import pytest

LIVE = bool(os.environ.get("PLATFORM_SERVER"))
needs_daemon = pytest.mark.skipif(
    not LIVE, reason="set PLATFORM_SERVER (and PLATFORM_TOKEN) to a running `platform serve`; "
                     "cargo test --test python_client does")


@pytest.fixture
def client():
    from platform_client import Client

    with Client() as c:
        yield c


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    """A small dataset uploaded once: its name."""
    from platform_client import Client

    if not LIVE:
        pytest.skip("no daemon")
    root = tmp_path_factory.mktemp("coco128")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    for i in range(3):
        (root / "images" / f"{i:04}.jpg").write_bytes(bytes([i]) * (100 + i))
        (root / "labels" / f"{i:04}.txt").write_text(f"0 0.5 0.5 0.{i + 1} 0.{i + 1}\n")
    (root / "data.yaml").write_text("names: [thing]\n")
    with Client() as c:
        c.upload_dataset(root, "coco128")
    return "coco128"


def fast_demo(**extra):
    return {"epochs": 3, "epoch_seconds": 0.05, **extra}
