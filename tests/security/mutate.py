"""A seeded mutator of raw HTTP requests: byte flips, cuts, duplication, header and CRLF games."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# Bytes that mean something to an HTTP parser.
SPECIAL = b"\r\n\t :;,/%?#\x00\x7f\xff\"'\\"


@dataclass(frozen=True)
class Mutant:
    """One fuzz case: what was done, and the bytes in the parts they are sent in."""

    name: str
    parts: tuple[bytes, ...]

    @property
    def data(self) -> bytes:
        return b"".join(self.parts)


class Mutator:
    """Derives requests from a corpus of valid ones; the same seed gives the same cases."""

    def __init__(self, corpus: Sequence[bytes], injections: Sequence[bytes], seed: int) -> None:
        self.corpus = list(corpus)
        self.injections = list(injections)
        self.random = random.Random(seed)
        self.ops: dict[str, Callable[[bytes], bytes]] = {
            "flip": self._flip,
            "special": self._special,
            "truncate": self._truncate,
            "duplicate": self._duplicate,
            "delete": self._delete,
            "inject": self._inject,
            "crlf": self._crlf,
            "splice": self._splice,
            "case": self._case,
            "repeat-header": self._repeat_header,
        }

    def mutant(self, index: int) -> Mutant:
        """The index-th case: 1 to 3 operations on a corpus entry, split into 1 to 3 parts."""
        rnd = self.random
        base = rnd.randrange(len(self.corpus))
        data = self.corpus[base]
        names = []
        for _ in range(rnd.randint(1, 3)):
            name = rnd.choice(list(self.ops))
            data = self.ops[name](data)
            names.append(name)
        cuts = sorted(
            rnd.sample(range(1, len(data)), min(max(len(data) - 1, 0), rnd.randint(0, 2)))
        )
        parts = tuple(data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True))
        return Mutant(f"#{index} corpus {base}: {'+'.join(names)}", parts)

    def _pos(self, data: bytes) -> int:
        return self.random.randrange(len(data) + 1)

    def _flip(self, data: bytes) -> bytes:
        if not data:
            return data
        out = bytearray(data)
        for _ in range(self.random.randint(1, 4)):
            at = self.random.randrange(len(out))
            out[at] ^= 1 << self.random.randrange(8)
        return bytes(out)

    def _special(self, data: bytes) -> bytes:
        if not data:
            return data
        out = bytearray(data)
        out[self.random.randrange(len(out))] = self.random.choice(SPECIAL)
        return bytes(out)

    def _truncate(self, data: bytes) -> bytes:
        return data[: self._pos(data)]

    def _duplicate(self, data: bytes) -> bytes:
        a, b = sorted((self._pos(data), self._pos(data)))
        return data[:b] + data[a:b] + data[b:]

    def _delete(self, data: bytes) -> bytes:
        a, b = sorted((self._pos(data), self._pos(data)))
        return data[:a] + data[b:]

    def _line_starts(self, data: bytes) -> list[int]:
        head = data.split(b"\r\n\r\n", 1)[0]
        return [i + 2 for i in range(len(head)) if head[i : i + 2] == b"\r\n"] or [0]

    def _inject(self, data: bytes) -> bytes:
        at = self.random.choice(self._line_starts(data))
        return data[:at] + self.random.choice(self.injections) + data[at:]

    def _crlf(self, data: bytes) -> bytes:
        ends = [i for i in range(len(data)) if data[i : i + 2] == b"\r\n"]
        if not ends:
            return data + b"\r\n"
        at = self.random.choice(ends)
        swap = self.random.choice([b"\n", b"\r", b"\r\n\r\n", b" \r\n", b"\r\n ", b"\n\r", b""])
        return data[:at] + swap + data[at + 2 :]

    def _splice(self, data: bytes) -> bytes:
        other = self.random.choice(self.corpus)
        return data[: self._pos(data)] + other[self._pos(other) :]

    def _case(self, data: bytes) -> bytes:
        a, b = sorted((self._pos(data), self._pos(data)))
        return data[:a] + data[a:b].swapcase() + data[b:]

    def _repeat_header(self, data: bytes) -> bytes:
        starts = self._line_starts(data)
        at = self.random.choice(starts)
        end = data.find(b"\r\n", at)
        if end < 0:
            return data
        line = data[at : end + 2]
        return data[:at] + line * self.random.randint(2, 50) + data[end + 2 :]
