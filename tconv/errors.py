"""The error every user-facing failure of tconv raises.

It lives apart from the IR so that the runtime side (plan reader, drivers)
loads without xDSL or TVM.
"""


class TconvError(Exception):
    """A user error: bad input, bad options, a broken rule. The message is complete."""
