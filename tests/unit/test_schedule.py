"""The convolution schedule property: what every backend's schedules must obey."""

import pytest
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, StringAttr

from tconv.ir.schedule import ConvSchedule, ScheduleError, loop_name, parse_schedule


def names(*loops: str) -> ArrayAttr:
    return ArrayAttr([StringAttr(n) for n in loops])


def test_round_trip_and_tiled_loop_names():
    schedule = ConvSchedule(
        {"oc": (2, 8), "ow": (4,)},
        ("n", "g", "oc.0", "oh", "ow.0", "oc.1", "ic", "kh", "kw", "ow.1", "oc.2"),
        "oc.2", frozenset({"kh", "ow.1"}), ("n", "g", "oc.0"),
    )
    assert schedule.loops() == ["n", "g", "oc.0", "oc.1", "oc.2", "oh", "ow.0", "ow.1", "ic", "kh", "kw"]
    assert schedule.factor("oc") == 8 and schedule.factor("ic") is None
    assert parse_schedule(schedule.to_attr()) == schedule
    assert loop_name("oc.2") == "oc"
    assert parse_schedule(DictionaryAttr({})) == ConvSchedule()


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"order": names("n", "g")}, "`order` must name every loop once"),
        ({"order": names("n", "g", "oc", "oh", "ow", "ic", "kh", "kh")}, "check 'kw'"),
        ({"parallel": names("g")}, "parallel loops must be the outermost ones, in order (n)"),
        ({"unroll": names("oc.1")}, "`unroll` names unknown loop 'oc.1'"),
        ({"vectorize": names("ow")}, "`vectorize` must be a loop name"),
        ({"tile": names("oc")}, "`tile` must be a dictionary"),
    ],
)
def test_broken_rules_are_named(entries, message):
    with pytest.raises(ScheduleError) as error:
        parse_schedule(DictionaryAttr(entries))
    assert message in str(error.value)
