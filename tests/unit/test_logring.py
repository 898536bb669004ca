from hubtwist.supervise.logring import LineSplitter, LogLine, LogRing


def test_lines_are_split_across_chunks():
    splitter = LineSplitter()
    assert splitter.feed(b"one\ntw") == ["one"]
    assert splitter.feed(b"o\r\nthree") == ["two"]
    assert splitter.flush() == ["three"]
    assert splitter.flush() == []


def test_overlong_lines_are_cut_and_bad_utf8_replaced():
    splitter = LineSplitter(max_line=4)
    assert splitter.feed(b"abcdefghij") == ["abcd", "efgh"]
    assert splitter.feed(b"\xff\n") == ["ij\ufffd"]


def test_ring_keeps_the_last_lines():
    ring = LogRing(size=3)
    for i in range(5):
        ring.append(LogLine(float(i), "stdout", str(i)))
    assert [line.text for line in ring] == ["2", "3", "4"]
    assert [line.text for line in ring.tail(2)] == ["3", "4"]
