"""What the fuzz harnesses share: the command line (atheris, or a replay without it) and a mutator.

Every harness defines ``TestOneInput(data: bytes)`` and ends with ``main(TestOneInput)``:

    python bench/fuzz/fuzz_codec.py CORPUS_DIR -max_total_time=60     # atheris (libFuzzer flags)
    python bench/fuzz/fuzz_codec.py --replay CORPUS_DIR [FILE ...]     # each input once, no atheris
    python bench/fuzz/fuzz_codec.py --random 5000 --seed 1 CORPUS_DIR  # seeded mutations, no atheris

``--replay`` and ``--random`` need nothing beyond the project: that is what CI runs (see
``tests/test_fuzz_corpus.py``). A failing input is written to ``crash-<sha1>`` in the current
directory (as libFuzzer does) and its traceback printed.
"""
from __future__ import annotations

import hashlib
import logging
import os
import random
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Iterable, List

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: Values that tend to sit on boundaries of the HTTP/2 wire format.
INTERESTING = [0, 1, 4, 5, 8, 9, 0x7F, 0x80, 0xFF, 0x3F, 0x40]


def instrumented(packages=("framecodec", "proxy")):
    """Import the code under test inside this: atheris then sees its coverage.

    Only when a harness runs under atheris (not for --replay/--random, not when imported by tests).
    """
    import contextlib

    import __main__
    argv = sys.argv
    main_file = getattr(__main__, "__file__", None)
    if "--replay" in argv or "--random" in argv or not main_file or Path(main_file).resolve().parent != HERE:
        return contextlib.nullcontext()
    try:
        import atheris
    except ImportError:
        return contextlib.nullcontext()
    return atheris.instrument_imports(include=list(packages))


def quiet_logging() -> None:
    """The relay logs every violation; fuzzing makes millions of them."""
    logging.getLogger("h2proxy").setLevel(logging.CRITICAL + 1)
    logging.getLogger("h2proxy").propagate = False


def inputs_of(paths: Iterable[str]) -> List[bytes]:
    """The files named, and the files in the directories named (recursively), sorted."""
    found: List[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.is_file())
        elif p.is_file():
            found.append(p)
    return [f.read_bytes() for f in found]


def mutate(rng: random.Random, data: bytes, pool: List[bytes], max_len: int = 1 << 16) -> bytes:
    """A libFuzzer-like mutation: flip, set, insert, erase, copy or splice with another input."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        n = len(buf)
        if op == 0 and n:
            buf[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            buf[rng.randrange(n)] = rng.choice(INTERESTING)
        elif op == 2:
            pos = rng.randint(0, n)
            buf[pos:pos] = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 16)))
        elif op == 3 and n:
            pos = rng.randrange(n)
            del buf[pos:pos + rng.randint(1, 16)]
        elif op == 4 and n:
            a = rng.randrange(n)
            chunk = buf[a:a + rng.randint(1, 32)]
            pos = rng.randint(0, n)
            buf[pos:pos] = chunk
        elif op == 5 and pool:
            other = rng.choice(pool)
            cut = rng.randint(0, n)
            buf = buf[:cut] + other[rng.randint(0, len(other)):]
        elif op == 6 and n >= 3:
            # A frame length field (at a random offset): a lie, often a small one.
            pos = rng.randrange(n - 2)
            value = rng.choice([0, 1, 8, 16384, 16385, 2 ** 24 - 1, rng.randrange(1 << 24)])
            buf[pos:pos + 3] = value.to_bytes(3, "big")
        elif op == 7 and n:
            del buf[rng.randint(0, n):]
    return bytes(buf[:max_len])


def _save_crash(data: bytes) -> str:
    name = "crash-" + hashlib.sha1(data).hexdigest()
    Path(name).write_bytes(data)
    return name


def run_inputs(test: Callable[[bytes], None], inputs: Iterable[bytes]) -> int:
    """Run each input; on the first failure save it, print the traceback and return 1."""
    for data in inputs:
        try:
            test(data)
        except Exception:
            traceback.print_exc()
            print(f"failing input ({len(data)} bytes) saved as {_save_crash(data)}", file=sys.stderr)
            return 1
    return 0


def random_inputs(seeds: List[bytes], count: int, seed: int, max_len: int = 1 << 16):
    """``count`` inputs: random bytes, and mutations (stacked) of the seeds."""
    rng = random.Random(seed)
    pool = list(seeds) or [b""]
    for i in range(count):
        if i % 10 == 0:
            data = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200)))
        else:
            data = mutate(rng, rng.choice(pool), pool, max_len)
            if rng.random() < 0.3:
                data = mutate(rng, data, pool, max_len)
        yield data


def main(test: Callable[[bytes], None], argv=None) -> None:
    argv = list(sys.argv if argv is None else argv)
    quiet_logging()
    if "--replay" in argv or "--random" in argv:
        count = 0
        seed = 0
        paths = []
        it = iter(argv[1:])
        for arg in it:
            if arg == "--random":
                count = int(next(it))
            elif arg == "--seed":
                seed = int(next(it))
            elif arg != "--replay":
                paths.append(arg)
        seeds = inputs_of(paths)
        started = time.monotonic()
        rc = run_inputs(test, seeds)
        if not rc and count:
            rc = run_inputs(test, random_inputs(seeds, count, seed))
        print(f"{Path(argv[0]).name}: {len(seeds)} corpus inputs, {count} random (seed {seed}): "
              f"{'FAILED' if rc else 'ok'} in {time.monotonic() - started:.1f} s", file=sys.stderr)
        sys.exit(rc)
    try:
        import atheris
    except ImportError:
        sys.exit("atheris is not installed: .venv/bin/pip install atheris "
                 "(or run without it: --replay CORPUS_DIR, --random N --seed S CORPUS_DIR)")
    atheris.Setup(argv, test)
    atheris.Fuzz()


if os.environ.get("H2PROXY_FUZZ_DEBUG"):
    logging.basicConfig(level=logging.DEBUG)
