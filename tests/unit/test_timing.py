"""interleaved_rounds and interleaved_medians: what they time and what they leave out."""

import time

from tconv.search.timing import interleaved_medians, interleaved_rounds


class ColdAfterPause:
    """A runner whose calls take 0.5 ms for the first 4 ms after an idle gap,
    as the first calls after a pause are slower on a VM, and ~0 after."""

    def __init__(self, gap_s: float):
        self.gap_s = gap_s
        self.last = self.woken = time.perf_counter()
        self.calls = 0

    def __call__(self):
        now = time.perf_counter()
        if now - self.last > self.gap_s:
            self.woken = now
        if now - self.woken < 0.004:
            time.sleep(0.0005)
        self.calls += 1
        self.last = time.perf_counter()


def test_the_calls_right_after_a_pause_are_not_timed():
    runners = [ColdAfterPause(0.02), ColdAfterPause(0.02)]
    seconds = interleaved_medians(runners, rounds=3, runs=5, pause_s=0.05)
    assert all(s < 0.00025 for s in seconds), seconds


def test_each_runner_runs_warm_up_then_runs_timed_calls_per_round():
    runners = [ColdAfterPause(10.0), ColdAfterPause(10.0)]
    per_round = interleaved_rounds(runners, rounds=2, runs=[4, 7], pause_s=0.0)
    assert [len(r) for r in per_round] == [2, 2]
    # 3 first calls, then per round at least one warm-up call and the timed ones
    assert runners[0].calls >= 3 + 2 * (1 + 4)
    assert runners[1].calls >= 3 + 2 * (1 + 7)
