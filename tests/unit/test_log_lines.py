"""entrypoints.log_lines: the event loop's log lines go in one write per turn, in order;
other lines at once; nothing waits past a flush; the time reads as logging's own."""

import asyncio
import io
import logging
import threading

from chatserver.entrypoints.log_lines import SecondsCachedFormatter, TurnBatchedHandler


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def handler_and_logger() -> tuple[CountingStream, TurnBatchedHandler, logging.Logger]:
    stream = CountingStream()
    handler = TurnBatchedHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(f"test.log_lines.{id(stream)}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return stream, handler, logger


def test_lines_of_a_turn_go_in_one_write_in_order_and_others_at_once() -> None:
    stream, handler, log = handler_and_logger()
    log.info("before the loop")  # no loop running: written at once
    assert (stream.getvalue(), stream.writes) == ("before the loop\n", 1)

    async def main() -> None:
        for turn in range(3):
            for n in range(4):
                log.info("turn %d line %d", turn, n)
            assert stream.getvalue().count("\n") == 1 + 4 * turn  # this turn's lines wait
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        thread = threading.Thread(target=log.info, args=("from a thread",))
        log.info("waiting when the thread logs")
        thread.start()
        thread.join()  # written at once, after what waited
        assert stream.getvalue().endswith("waiting when the thread logs\nfrom a thread\n")
        log.info("the last line")

    asyncio.run(main())
    handler.flush()  # logging.shutdown does this at exit
    lines = stream.getvalue().splitlines()
    assert lines == (
        ["before the loop"]
        + [f"turn {t} line {n}" for t in range(3) for n in range(4)]
        + ["waiting when the thread logs", "from a thread", "the last line"]
    )
    assert stream.writes == 1 + 3 + 1 + 1  # one write per turn

    # A loop that stopped before its flush ran does not hold a later loop's lines back.
    async def another() -> None:
        log.info("in another loop")
        await asyncio.sleep(0)
        assert stream.getvalue().endswith("in another loop\n")

    asyncio.run(another())


def test_the_time_is_formatted_as_logging_formats_it() -> None:
    ours, theirs = SecondsCachedFormatter("%(asctime)s"), logging.Formatter("%(asctime)s")
    for created in (1_800_000_000.123, 1_800_000_000.999, 1_800_000_001.5, 1_800_000_000.25):
        record = logging.makeLogRecord({"created": created, "msecs": (created % 1) * 1000})
        assert ours.format(record) == theirs.format(record)
