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


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under `pytest -n N --dist loadgroup` (make test), a file's tests run
    on one worker, so its module fixtures are built once; the cases of the
    SPREAD files are each a unit of their own, so that the zoo networks do
    not queue on one worker while the other idles. (Runs before xdist's own
    hook, which reads these marks.)"""
    for item in items:
        group = item.nodeid if item.path.name in SPREAD else str(item.path)
        item.add_marker(pytest.mark.xdist_group(group))
