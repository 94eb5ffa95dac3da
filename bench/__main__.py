"""python -m bench [NAME ...] [--quick]: run the benchmarks (all by default), print each one's figures and its
ratios against the named peer, and keep the figures in .cache/bench/NAME.json."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from bench import (
    comm,
    decode,
    digest,
    fanout,
    load,
    logs,
    model_check,
    peers,
    pipeline,
    profiling,
    quant,
    report,
    roofline,
    strategies,
    tui,
)

BENCHMARKS = {
    "decode": decode.run,  # our loop vs HF generate
    "strategies": strategies.run,  # TP / PP on this machine vs a single process
    "roofline": roofline.run,  # decode vs the memory-bandwidth bound
    "comm": comm.run,  # alpha/beta of all-reduce and send/recv
    "load": load.run,  # one PP-2 stage's checkpoint load vs a whole-model from_pretrained
    "collect": pipeline.collect,  # shard rows into the results table vs pandas.read_json
    "orchestration": pipeline.orchestration,  # a Slurm job's end to its rows collected
    "fanout": fanout.run,  # uptime on 64 sshd endpoints vs clush
    "tui": tui.run,  # the cockpit on 64 nodes + 2,000 jobs vs an empty cluster
    "digest": digest.run,  # a runtime install's content digest vs sha256sum
    "model": model_check.run,  # the model check before a sweep: sizes and mtimes vs every file hashed
    "profiling": profiling.run,  # decoding profiled off / ranges only / recorded vs HF generate
    "logs": logs.run,  # a 100 MB job log's first screen vs tail -n 1000
    "quant": quant.run,  # decode tok/s and weight bytes at int8 / int4 vs fp32
    "peers": peers.run,  # our decode vs llama.cpp on the same weights, f32 and Q8_0 (the bench extra)
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"any of {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="fewer cases and repeats")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}: choose from {', '.join(BENCHMARKS)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    failed = []
    for name in args.names or list(BENCHMARKS):
        print(f"\n== {name}")
        started = time.perf_counter()
        try:
            figures = BENCHMARKS[name](args.quick)
        except RuntimeError as err:
            print(f"{name}: {err}", file=sys.stderr)
            failed.append(name)
            continue
        path = report.save(name, {"quick": args.quick, "seconds": time.perf_counter() - started, **figures})
        print(f"({time.perf_counter() - started:.0f} s; figures in {path})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
