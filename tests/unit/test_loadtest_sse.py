"""Incremental server-sent-events parsing: the same events however the network splits the stream."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadtest.sse import SseParser

# One stream with every feature the parser handles: a comment-only event, a JSON payload, `data:` with
# no space, a value that keeps its second leading space, multi-line data, fields other than data,
# multi-byte UTF-8 (which a cut can split) and the closing [DONE].
STREAM_LF = (
    b": ping\n\n"
    b'data: {"choices": [{"delta": {"content": "Hi"}}]}\n\n'
    b"data:no-space\n\n"
    b"data:  two spaces\n\n"
    b"data: line one\ndata: line two\ndata: line three\n\n"
    b": comment inside an event\nevent: message\nid: 7\ndata: caf\xc3\xa9 \xe2\x82\xac\nretry: 10\n\n"
    b"event: no-data\nid: 8\n\n"
    b"data: [DONE]\n\n"
)
EVENTS = [
    '{"choices": [{"delta": {"content": "Hi"}}]}',
    "no-space",
    " two spaces",
    "line one\nline two\nline three",
    "café €",
    "[DONE]",
]
STREAM_CRLF = STREAM_LF.replace(b"\n", b"\r\n")
# With bare CR endings the final CR could still be half of a CRLF, so one more byte must follow it.
STREAM_CR = STREAM_LF.replace(b"\n", b"\r") + b":"
STREAMS = {"lf": STREAM_LF, "crlf": STREAM_CRLF, "cr": STREAM_CR}


def feed_all(pieces: list[bytes]) -> tuple[list[str], bytes]:
    parser = SseParser()
    events = [event for piece in pieces for event in parser.feed(piece)]
    return events, parser.pending


def split_at(stream: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(stream)]
    return [stream[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


@pytest.mark.parametrize("name", STREAMS)
def test_whole_stream_in_one_read(name: str) -> None:
    events, _ = feed_all([STREAMS[name]])
    assert events == EVENTS


@pytest.mark.parametrize("name", STREAMS)
def test_two_pieces_at_every_cut_point(name: str) -> None:
    stream = STREAMS[name]
    for cut in range(len(stream) + 1):
        events, _ = feed_all([stream[:cut], stream[cut:]])
        assert events == EVENTS, f"cut at byte {cut}"


@pytest.mark.parametrize("name", STREAMS)
def test_one_byte_at_a_time(name: str) -> None:
    stream = STREAMS[name]
    events, pending = feed_all([stream[i : i + 1] for i in range(len(stream))])
    assert events == EVENTS
    assert pending == (b":" if name == "cr" else b"")


@given(cuts=st.lists(st.integers(min_value=0, max_value=len(STREAM_CRLF)), max_size=40))
@settings(max_examples=150, deadline=None)
def test_random_chunkings_of_a_crlf_stream(cuts: list[int]) -> None:
    events, pending = feed_all(split_at(STREAM_CRLF, cuts))
    assert events == EVENTS
    assert pending == b""


@given(
    cuts=st.lists(st.integers(min_value=0, max_value=len(STREAM_LF)), max_size=40),
    name=st.sampled_from(sorted(STREAMS)),
)
@settings(max_examples=150, deadline=None)
def test_random_chunkings_of_every_line_ending(cuts: list[int], name: str) -> None:
    stream = STREAMS[name]
    events, _ = feed_all(split_at(stream, [min(cut, len(stream)) for cut in cuts]))
    assert events == EVENTS


_LINE = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=12)


@st.composite
def encoded_streams(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    """A stream of random events (data lines, comments), each line ended by LF or CRLF at random."""
    payloads = draw(st.lists(st.lists(_LINE, min_size=1, max_size=3), max_size=6))
    stream, expected = b"", []
    for lines in payloads:
        if draw(st.booleans()):
            stream += b": " + draw(_LINE).encode() + draw(st.sampled_from([b"\n", b"\r\n"]))
        for line in lines:
            stream += b"data: " + line.encode() + draw(st.sampled_from([b"\n", b"\r\n"]))
        stream += draw(st.sampled_from([b"\n", b"\r\n"]))  # the blank line ending the event
        expected.append("\n".join(lines))
    return stream, expected


@given(case=encoded_streams(), data=st.data())
@settings(max_examples=150, deadline=None)
def test_random_events_survive_random_chunkings(case: tuple[bytes, list[str]], data: st.DataObject) -> None:
    stream, expected = case
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=20))
    events, pending = feed_all(split_at(stream, cuts))
    assert events == expected
    assert pending == b""


@pytest.mark.parametrize(
    "pieces",
    [
        [b"data: a\r", b"\n\r\n"],
        [b"data: a\r\n\r", b"\n"],
        [b"data: a\r", b"\n", b"\r", b"\n"],
        [b"data: a", b"\r\n", b"\r\n"],
    ],
)
def test_crlf_split_across_reads(pieces: list[bytes]) -> None:
    events, pending = feed_all(pieces)
    assert events == ["a"]
    assert pending == b""


def test_trailing_cr_is_held_until_the_next_byte() -> None:
    parser = SseParser()
    # "data: a\r\r" ends an event with bare CRs, unless the next byte is LF and the last CR begins a CRLF.
    assert parser.feed(b"data: a\r\r") == []
    assert parser.pending.endswith(b"\r")
    assert parser.feed(b"data: b\r\r") == ["a"]
    assert parser.feed(b"\n") == ["b"]
    assert parser.pending == b""


def test_several_events_in_one_read_and_a_partial_one_kept() -> None:
    parser = SseParser()
    assert parser.feed(b"data: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4") == ["1", "2", "3"]
    assert parser.pending == b"data: 4"
    assert parser.feed(b"\n") == []
    assert parser.pending == b"data: 4\n"
    assert parser.feed(b"\ndata: 5\n\n") == ["4", "5"]
    assert parser.pending == b""


def test_pending_bytes_are_kept_until_the_event_completes() -> None:
    parser = SseParser()
    assert parser.feed(b'data: {"a"') == []
    assert parser.pending == b'data: {"a"'
    assert parser.feed(b": 1}\n") == []
    assert parser.pending == b'data: {"a": 1}\n'
    assert parser.feed(b"\n") == ['{"a": 1}']
    assert parser.pending == b""


def test_comment_only_events_are_ignored() -> None:
    events, pending = feed_all([b": ping\n\n: keep-alive\n: more\n\ndata: x\n\n: ping\n\n"])
    assert events == ["x"]
    assert pending == b""


def test_multi_line_data_is_joined_with_newlines() -> None:
    events, _ = feed_all([b"data: a\ndata:b\ndata: \ndata:  c\n\n"])
    assert events == ["a\nb\n\n c"]


def test_utf8_split_inside_a_character() -> None:
    encoded = "data: héllo €\n\n".encode()
    cut = encoded.index("€".encode()) + 1  # in the middle of the three bytes of €
    events, _ = feed_all([encoded[:cut], encoded[cut:]])
    assert events == ["héllo €"]
