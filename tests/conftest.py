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


SPREAD = {"test_llvm_zoo.py", "test_tvm_zoo.py", "test_onnx_zoo.py"}
"""Files of long, independent cases (a zoo network each, no shared fixture)."""


def pytest_xdist_make_scheduler(config, log):
    """Under `pytest -n N --dist loadfile` (make test), a file's tests run on
    one worker, in a row, so its module fixtures are built once; the cases of
    the SPREAD files are each a unit of their own, so that the zoo networks do
    not queue on one worker while the other idles. (xdist's own `loadgroup`
    cannot say this under pytest 9: the group it appends to a test's node id
    no longer reaches the scheduler, so every test became its own unit and a
    module fixture was built once per worker that ran one of its tests.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return nodeid if path.rsplit("/", 1)[-1] in SPREAD else path

    return FileScheduling(config, log)
