"""The progress line: redrawn in place on a terminal, a line at most every
LOG_INTERVAL_S seconds elsewhere."""

import io

from tconv.search import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_it_logs_a_line_per_interval(monkeypatch, capsys):
    clock = iter([0.0, 1.0, 29.0, 31.0, 32.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    for step in range(4):
        progress.show(f"step {step}")
    progress.done()
    progress.show("next run")  # after done(), at once
    assert capsys.readouterr().err == "step 0\nstep 3\nnext run\n"
    progress.done()


def test_on_a_terminal_it_redraws_in_place(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(progress.sys, "stderr", terminal)
    progress.show("a")
    progress.show("b")
    progress.done()
    assert terminal.getvalue() == "\ra\rb\n"


def test_the_bar_fills_its_share_of_the_width():
    assert progress.bar(0.5, 4) == "[##..]"
    assert progress.bar(1.5, 3) == "[###]" and progress.bar(0.0, 2) == "[..]"
