"""Long --live reads show a bar: every record the stage reads from Ometria is counted on it."""

from khaosync.cli.live_reads import CountedReads, live_reads


class _Reads:
    closed = False

    def iter_orders(self):
        yield from ({"id": str(n)} for n in range(60))

    def close(self):
        self.closed = True


class _Terminal:
    def __init__(self):
        self.ticks: list[tuple[str, str, int, int | None]] = []

    def progress(self, label):
        from contextlib import contextmanager

        @contextmanager
        def bar():
            yield lambda name, done, total: self.ticks.append((label, name, done, total))

        return bar()


def test_every_record_passes_and_the_bar_counts_them():
    terminal = _Terminal()
    client = _Reads()
    with live_reads(terminal, client) as reads:
        assert isinstance(reads, CountedReads)
        assert [o["id"] for o in reads.iter_orders()] == [str(n) for n in range(60)]
        reads.close()  # anything else reaches the client untouched
    assert client.closed
    assert terminal.ticks[0] == ("read", "orders", 1, None)
    assert terminal.ticks[-1] == ("read", "orders", 60, 60)  # finished: the whole count
    assert [t[2] for t in terminal.ticks] == [1, 25, 50, 60]


def test_no_live_client_no_bar():
    terminal = _Terminal()
    with live_reads(terminal, None) as reads:
        assert reads is None
    assert terminal.ticks == []
