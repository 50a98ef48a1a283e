"""The lag clock: 0 while every partition is processed to its end, else the time since it last was."""

from processors.stream.lag import LagClock


def test_lag_is_zero_while_caught_up_and_grows_while_behind() -> None:
    clock = LagClock(started=100.0)
    assert clock.seconds(101.0, {("t", 0): None}) == 0.0
    clock.processed_to("t", 0, 9, timestamp=101.5)
    assert clock.seconds(102.0, {("t", 0): 10}) == 0.0
    assert clock.seconds(105.0, {("t", 0): 15, ("t", 1): 0}) == 3.5  # the last record is 3.5 s old
    clock.processed_to("t", 0, 10, timestamp=104.5)
    assert clock.seconds(105.0, {("t", 0): 15, ("t", 1): 0}) == 3.0  # stuck since 102
    assert clock.records_behind({("t", 0): 15, ("t", 1): 2}) == 6
    clock.processed_to("t", 0, 14)
    clock.processed_to("t", 1, 1)
    assert clock.seconds(106.0, {("t", 0): 15, ("t", 1): 2}) == 0.0


def test_a_reading_after_the_loop_stood_still_is_not_caught_up() -> None:
    # the end offsets are from before the pause: they look processed, but records arrived meanwhile
    clock = LagClock(started=100.0)
    clock.processed_to("t", 0, 9, timestamp=100.5)
    assert clock.seconds(101.0, {("t", 0): 10}) == 0.0
    assert clock.seconds(109.0, {("t", 0): 10}) == 8.0  # 8 s without a reading: since it was caught up
    assert clock.seconds(110.0, {("t", 0): 10}) == 0.0  # the next reading, with fresh offsets
