from __future__ import annotations

import re
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.lines import CONTINUED, LineSplitter


def feed_all(chunks: list[bytes], max_line: int = 65536) -> list[str]:
    splitter = LineSplitter(max_line)
    lines: list[str] = []
    for chunk in chunks:
        lines += splitter.feed(chunk)
    return lines + splitter.flush()


def reference(data: bytes, max_line: int) -> list[str]:
    """The rules, stated the slow and obvious way, on the whole output at once."""
    parts = re.split(r"\r\n|\r|\n", data.decode("utf-8", errors="replace"))
    if parts[-1] == "":
        parts.pop()
    out: list[str] = []
    for part in parts:
        pieces = [part[i : i + max_line] for i in range(0, len(part), max_line)] or [""]
        out += [piece + CONTINUED for piece in pieces[:-1]] + pieces[-1:]
    return out


def test_lines_end_at_lf_and_the_end_is_not_part_of_the_line():
    assert feed_all([b"a\nbb\n\nccc\n"]) == ["a", "bb", "", "ccc"]


def test_partial_line_waits_for_its_end():
    splitter = LineSplitter()
    assert splitter.feed(b"hel") == []
    assert splitter.pending_text() == "hel"
    assert splitter.feed(b"lo wor") == []
    assert splitter.feed(b"ld\nnext") == ["hello world"]
    assert splitter.pending_text() == "next"
    assert splitter.flush() == ["next"]
    assert splitter.pending_text() == ""


def test_flush_without_pending_text_gives_nothing():
    splitter = LineSplitter()
    assert splitter.feed(b"done\n") == ["done"]
    assert splitter.flush() == []


def test_crlf_is_one_line_end():
    assert feed_all([b"a\r\nb\r\n"]) == ["a", "b"]


def test_crlf_split_across_chunks_is_one_line_end():
    splitter = LineSplitter()
    assert splitter.feed(b"first\r") == ["first"]
    assert splitter.feed(b"\nsecond\r") == ["second"]
    assert splitter.feed(b"\n") == []
    assert splitter.feed(b"\n") == [""]
    assert splitter.flush() == []


def test_cr_at_chunk_end_then_empty_decode_then_lf():
    # The half of a multi-byte character decodes to nothing; the pending "\n" skip must survive it.
    splitter = LineSplitter()
    assert splitter.feed(b"a\r") == ["a"]
    assert splitter.feed(b"") == []
    assert splitter.feed(b"\nb\xc3") == []
    assert splitter.feed(b"\xa9\n") == ["b\u00e9"]


def test_bare_cr_redraws_are_lines_of_their_own():
    assert feed_all([b"10%\r20%\r30%\rdone\n"]) == ["10%", "20%", "30%", "done"]
    assert feed_all([b"a\r\r\nb"]) == ["a", "", "b"]


def test_invalid_utf8_becomes_replacement_characters_and_nothing_is_dropped():
    lines = feed_all([b"ok \xff\xfe end\n", b"\xc3(x\n"])
    assert lines == ["ok \ufffd\ufffd end", "\ufffd(x"]


def test_multibyte_character_split_across_chunks():
    data = "héllo wörld €uro 𝄞\n".encode()
    for cut in range(1, len(data)):
        assert feed_all([data[:cut], data[cut:]]) == ["héllo wörld €uro 𝄞"], cut
    assert feed_all([bytes([b]) for b in data]) == ["héllo wörld €uro 𝄞"]


def test_truncated_multibyte_character_at_eof_is_replaced():
    assert feed_all([b"abc\xe2\x82"]) == ["abc\ufffd"]


def test_line_of_exactly_max_line_is_one_line_whatever_the_chunking():
    assert feed_all([b"abcd", b"\n"], max_line=4) == ["abcd"]
    assert feed_all([b"abcdefgh", b"\n"], max_line=4) == ["abcd↩", "efgh"]
    assert feed_all([b"abcdefghi\n"], max_line=4) == ["abcd↩", "efgh↩", "i"]


def test_pieces_of_a_cut_line_but_the_last_end_with_the_continuation_mark():
    for chunks in ([b"abcdefghij\nk\n"], [b"abc", b"defg", b"hij", b"\nk\n"], [b"abcdefghij", b"\nk"]):
        lines = feed_all(chunks, max_line=4)
        assert lines == ["abcd↩", "efgh↩", "ij", "k"], chunks
        # the command's text, exactly, once the marks are dropped
        assert "".join(line.removesuffix(CONTINUED) for line in lines[:3]) == "abcdefghij"


def test_ten_megabyte_line_is_cut_in_pieces_and_memory_stays_bounded():
    max_line = 65536
    chunk = b"x" * 65536
    total = 10 * 1024 * 1024
    splitter = LineSplitter(max_line)
    pieces = 0
    characters = 0
    tracemalloc.start()
    try:
        for _ in range(total // len(chunk)):
            for piece in splitter.feed(chunk):
                assert piece == "x" * max_line + CONTINUED
                pieces += 1
                characters += max_line
            # The splitter holds at most one line's worth between calls.
            assert len(splitter.pending_text()) <= max_line
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rest = splitter.feed(b"\n") + splitter.flush()
    characters += sum(len(piece) for piece in rest)
    assert characters == total
    assert pieces + len(rest) == total // max_line
    # Ten megabytes went through; only a few chunks' worth was ever alive at once (during a call:
    # the chunk, its decoded text, the pending line joined to it, and the pieces cut from them).
    assert peak < 10 * max_line


def test_long_line_inside_one_big_chunk_is_cut_too():
    data = b"a" * 10 + b"\n" + b"b" * 25 + b"\nc"
    assert feed_all([data], max_line=10) == ["a" * 10, "b" * 10 + "↩", "b" * 10 + "↩", "b" * 5, "c"]


def test_splitter_is_reusable_after_flush():
    splitter = LineSplitter()
    splitter.feed(b"one\r")
    assert splitter.flush() == []
    assert splitter.feed(b"\ntwo\n") == ["", "two"]


def test_max_line_must_be_positive():
    with pytest.raises(ValueError):
        LineSplitter(0)


@st.composite
def chunked(draw, alphabet: bytes | None = None):
    if alphabet is None:
        data = draw(st.binary(max_size=400))
    else:
        data = bytes(draw(st.lists(st.sampled_from(list(alphabet)), max_size=400)))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return data, [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


# Bytes that matter: line ends, ASCII, parts of multi-byte characters and invalid bytes.
INTERESTING = b"\r\n\r\nab \xc3\xa9\xe2\x82\xac\xf0\x9d\x84\x9e\xff\xc0\x80"


@settings(max_examples=400, deadline=None)
@given(chunked(), st.integers(1, 9))
def test_any_chunking_of_binary_noise_gives_the_same_lines_as_feeding_it_whole(case, max_line):
    data, chunks = case
    whole = feed_all([data], max_line)
    assert feed_all(chunks, max_line) == whole
    assert whole == reference(data, max_line)


@settings(max_examples=400, deadline=None)
@given(chunked(INTERESTING), st.sampled_from([1, 2, 3, 5, 65536]))
def test_any_chunking_of_line_ends_and_multibyte_text_matches_the_rules(case, max_line):
    data, chunks = case
    assert feed_all(chunks, max_line) == reference(data, max_line)
