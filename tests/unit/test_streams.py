"""racf_vm.job.streams: the job's stdout and stderr, capped, and never a reason to hang."""

import os
import time

from racf_vm.job.streams import StreamSink


def test_delivers_up_to_the_cap_then_reports_overflow_once():
    r, w = os.pipe()
    calls = []
    sink = StreamSink(w, "stdout", 10, 1.0, lambda: calls.append(1))
    sink.write(b"12345")
    sink.write(b"6789abc")
    sink.write(b"more")
    os.close(w)
    assert os.read(r, 100) == b"123456789a" and calls == [1] and sink.overflow
    os.close(r)


def test_a_reader_that_stops_reading_costs_one_stall_then_the_rest_is_dropped():
    r, w = os.pipe()
    sink = StreamSink(w, "stdout", 1 << 30, 0.3, lambda: None)
    started = time.monotonic()
    sink.write(b"x" * (1 << 20))  # far more than a pipe holds; nobody reads
    sink.write(b"y" * 1000)
    elapsed = time.monotonic() - started
    assert sink.dead and sink.dropped > 0 and sink.total == (1 << 20) + 1000
    assert elapsed < 5  # one stall of 0.3 s, not one per write (bounded, not timed to the ms)
    os.close(r)
    os.close(w)


def test_a_closed_reader_does_not_stop_the_job():
    r, w = os.pipe()
    os.close(r)
    sink = StreamSink(w, "stderr", 100, 1.0, lambda: None)
    sink.write(b"abc")  # EPIPE (SIGPIPE is ignored in Python)
    assert sink.dead and sink.dropped == 3
    os.close(w)
