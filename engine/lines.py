"""Split a command's output bytes into text lines, chunk by chunk.

Lines end at ``\\n``, ``\\r\\n`` or a bare ``\\r`` (a progress bar redrawing itself: each redraw is
a line of its own). The bytes are decoded as UTF-8 incrementally, invalid bytes becoming U+FFFD.
A line longer than ``max_line`` characters is cut into pieces of ``max_line`` so that memory stays
bounded whatever the command prints. Every piece but the last ends with ``CONTINUED`` ("↩"), added
here, so that a reader sees the line goes on (the text is otherwise the command's, exactly: drop
the mark of a piece ``max_line + 1`` long and join the pieces to get the line back).

The work is done on whole chunks with ``str`` methods that run in C; nothing loops per character.
"""

from __future__ import annotations

import codecs

DEFAULT_MAX_LINE = 65536
#: ends every piece of a cut line but the last (an editor's soft-wrap arrow: "continued below")
CONTINUED = "\u21a9"


class LineSplitter:
    """Turns a stream of byte chunks into complete lines.

    >>> s = LineSplitter()
    >>> s.feed(b"one\\ntw")
    ['one']
    >>> s.feed(b"o\\r\\n50%\\r100%\\rdone")
    ['two', '50%', '100%']
    >>> s.flush()
    ['done']
    """

    __slots__ = ("_decoder", "_max_line", "_pending", "_skip_lf")

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        if max_line < 1:
            raise ValueError("max_line must be at least 1")
        self._max_line = max_line
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        #: text after the last line end seen, never longer than max_line
        self._pending = ""
        #: the previous text ended with "\r": a "\n" starting the next one belongs to that line end
        self._skip_lf = False

    @property
    def max_line(self) -> int:
        return self._max_line

    def feed(self, data: bytes) -> list[str]:
        """Add a chunk; return the lines it completes (without their line ends)."""
        text = self._decoder.decode(data)
        if not text:
            return []
        return self._split(text)

    def flush(self) -> list[str]:
        """At end of output: return what is left (a last line without a line end, if any).

        The splitter is then ready for a new stream.
        """
        text = self._decoder.decode(b"", final=True)
        lines = self._split(text) if text else []
        rest = self._pending
        self._pending = ""
        self._skip_lf = False
        self._decoder.reset()
        if rest:
            lines.append(rest)
        return lines

    def pending_text(self) -> str:
        """The line being written (no line end yet), e.g. for a live preview."""
        return self._pending

    def _split(self, text: str) -> list[str]:
        if self._skip_lf:
            self._skip_lf = False
            if text[0] == "\n":
                text = text[1:]
                if not text:
                    return []
        if self._pending:
            text = self._pending + text
        if "\r" in text:
            if text[-1] == "\r":
                # The "\n" of a "\r\n" may come with the next chunk: remember to drop it then.
                self._skip_lf = True
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        lines = text.split("\n")
        pending = lines.pop()
        max_line = self._max_line
        if len(text) > max_line and lines and max(map(len, lines)) > max_line:
            lines = _cut_long(lines, max_line)
        if len(pending) > max_line:
            # Keep 1..max_line characters: a line of exactly max_line ending in the next chunk
            # must stay one line, not a piece plus an empty line.
            end = (len(pending) - 1) // max_line * max_line
            lines.extend(pending[i : i + max_line] + CONTINUED for i in range(0, end, max_line))
            pending = pending[end:]
        self._pending = pending
        return lines


def _cut_long(lines: list[str], max_line: int) -> list[str]:
    out: list[str] = []
    for line in lines:
        if len(line) <= max_line:
            out.append(line)
        else:
            end = (len(line) - 1) // max_line * max_line
            out.extend(line[i : i + max_line] + CONTINUED for i in range(0, end, max_line))
            out.append(line[end:])
    return out
