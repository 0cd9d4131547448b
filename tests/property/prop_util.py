"""Helpers shared by the property tests: case-count scaling and a hang guard."""
import contextlib
import os
import signal


def n(x: int) -> int:
    return max(1, round(x * float(os.environ.get("QPASS_PROP_SCALE", "1"))))


class Hang(BaseException):
    """Raised by the alarm: a BaseException, so that no `except OSError/Exception` in qpass can swallow it."""


@contextlib.contextmanager
def no_hang(seconds: int):
    def fire(signum, frame):
        raise Hang(f"hang: no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    except Hang as e:  # reported as an ordinary failure, so hypothesis shows the example
        raise AssertionError(str(e)) from None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
