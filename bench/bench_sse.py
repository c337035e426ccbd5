"""The SSE framer on one long line and on many small events, beside the split-and-rejoin
framer it replaced (kept here as the reference). Run: ``python bench/bench_sse.py``.

The old framer appended each network read to a ``bytes`` buffer and split the whole buffer
on every read: a line that arrives in many reads is copied and scanned again on each one, so
its cost grows with the square of its length. The framer in ``engine/_sse.py`` scans each
byte once.
"""

from __future__ import annotations

import argparse
import time

from harmony_agent.engine._sse import SSEFramer

READ = 64 * 1024  # what one network read returns, about


def old_framer(reads: list[bytes]) -> list[str]:
    """The replaced algorithm, for comparison only."""
    out: list[str] = []
    buffer = b""
    for data in reads:
        buffer += data.replace(b"\r\n", b"\n")
        *complete, buffer = buffer.split(b"\n\n")
        for event in complete:
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    out.append(line[5:].strip().decode())
    return out


def new_framer(reads: list[bytes]) -> list[str]:
    framer = SSEFramer(max_line=64 * 1024 * 1024)
    out: list[str] = []
    for data in reads:
        out += framer.feed(data)
    return out + framer.close()


def pieces(stream: bytes) -> list[bytes]:
    return [stream[i : i + READ] for i in range(0, len(stream), READ)]


def best(fn, reads: list[bytes], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn(reads)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-old-16", action="store_true", help="skip the slow old 16 MiB run")
    args = parser.parse_args()
    cases = []
    for mib in (1, 4, 16):
        cases.append((f"one {mib} MiB line", b"data: " + b"x" * (mib << 20) + b"\n\n", mib))
    event = b'data: {"choices":[{"index":0,"token_ids":[1234],"finish_reason":null}]}\n\n'
    cases.append(("100k small events (7 MiB)", event * 100_000, 0))
    print(f"{'case':28} {'old (s)':>10} {'new (s)':>10}")
    for name, stream, mib in cases:
        reads = pieces(stream)
        skip = mib == 16 and args.skip_old_16
        if not skip:  # the same payloads, or the comparison means nothing
            assert new_framer(reads) == old_framer(reads)
        old = None if skip else best(old_framer, reads, 1 if mib == 16 else args.repeat)
        new = best(new_framer, reads, args.repeat)
        print(f"{name:28} {'-' if old is None else f'{old:.3f}':>10} {new:>10.3f}")


if __name__ == "__main__":
    main()
