"""Settings every test shares."""

import os
import tempfile

import pytest


@pytest.fixture(autouse=True, scope="session")
def private_tuning_database():
    """`tconv compile` applies the user's tuning database by default: the tests
    get an empty one of their own, so no earlier tuning changes what they compile."""
    with tempfile.TemporaryDirectory(prefix="tconv-tests-") as directory:
        saved = os.environ.get("TCONV_TUNING_DB")
        os.environ["TCONV_TUNING_DB"] = os.path.join(directory, "tuning.jsonl")
        yield
        if saved is None:
            del os.environ["TCONV_TUNING_DB"]
        else:
            os.environ["TCONV_TUNING_DB"] = saved
