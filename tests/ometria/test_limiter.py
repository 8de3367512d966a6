import threading

from khaosync.ometria.limiter import TokenBucket


class FakeTime:
    def __init__(self):
        self.now = 100.0
        self.lock = threading.Lock()

    def clock(self):
        return self.now

    def sleep(self, seconds):
        with self.lock:
            self.now += seconds


def test_no_one_second_window_holds_more_than_the_rate():
    t = FakeTime()
    bucket = TokenBucket(4, clock=t.clock, sleep=t.sleep)
    stamps = []
    for _ in range(40):
        bucket.acquire()
        stamps.append(t.now)
    for i in range(len(stamps)):
        window = [s for s in stamps if stamps[i] - 1 < s <= stamps[i] + 1e-9]
        assert len(window) <= 4
    assert abs((stamps[-1] - stamps[0]) - 39 * 0.25) < 1e-6


def test_a_burst_allows_an_initial_run():
    t = FakeTime()
    bucket = TokenBucket(4, burst=4, clock=t.clock, sleep=t.sleep)
    stamps = []
    for _ in range(5):
        bucket.acquire()
        stamps.append(t.now)
    assert stamps[:4] == [100.0] * 4 and stamps[4] == 100.25


def test_rate_is_held_over_a_long_run():
    t = FakeTime()
    bucket = TokenBucket(8, clock=t.clock, sleep=t.sleep)
    for _ in range(808):
        bucket.acquire()
    # the first at once, then 807 more at 8/s
    assert abs((t.now - 100.0) - 807 / 8) < 1e-6


def test_penalty_blocks_then_restarts_empty():
    t = FakeTime()
    bucket = TokenBucket(4, clock=t.clock, sleep=t.sleep)
    bucket.acquire()
    bucket.penalise(2.0)
    bucket.acquire()
    assert t.now >= 102.0


def test_threads_share_one_allowance():
    import time as real_time

    bucket = TokenBucket(50, burst=1)
    got = []
    lock = threading.Lock()

    def worker():
        for _ in range(10):
            bucket.acquire()
            with lock:
                got.append(real_time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    start = real_time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(got) == 40
    # 40 tokens at 50/s starting from one: at least 0.78 s whatever the thread count
    assert real_time.monotonic() - start >= 0.75
