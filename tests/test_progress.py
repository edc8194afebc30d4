"""Progress bars: live on a terminal, sparse in a log file."""

import io
import time

from stqa.progress import LOG_INTERVAL_S, progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _lines_written(stream: io.StringIO, steps: int) -> int:
    for _ in progress(range(steps), file=stream, desc="work"):
        time.sleep(0.002)
    return stream.getvalue().count("\r") + stream.getvalue().count("\n")


def test_redirected_bar_refreshes_only_every_log_interval():
    log = io.StringIO()
    assert progress(range(1), file=io.StringIO()).mininterval == LOG_INTERVAL_S
    # 200 steps over ~0.4 s: a log gets the opening and closing state only, not a line per refresh.
    assert _lines_written(log, 200) <= 3
    assert "200/200" in log.getvalue()


def test_terminal_bar_refreshes_live():
    term = _Terminal()
    assert progress(range(1), file=_Terminal()).mininterval == 0.1
    assert _lines_written(term, 200) > 3


def test_explicit_interval_wins():
    assert progress(range(1), file=io.StringIO(), mininterval=2.0).mininterval == 2.0
