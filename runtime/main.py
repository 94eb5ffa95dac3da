"""`python -m runtime --config exp_config.json`: one rank of a strategy's run.

Launched by srun (one task per GPU), the deepspeed launcher, torchrun, or directly (one process). Every rank
loads its stage (and TP slice) of the model, works through its replica's share of the prompt table, and writes
progress lines as it goes; result-owning ranks write shard rows; every rank writes its metrics at the end. Each rank's
log lines go to stderr (the job's output) and to its own `logs/rank_<N>.log`.
Exit codes: 0 done, 1 failed (a peer included), 2 bad input.

This module: the arguments, the run's config read and checked, the dry run, and the exit codes; the run itself
is runtime.rank.Rank. It imports no torch at its top, so `--help` and `--dry-run` answer quickly.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.contract import QUANTIZED, ExperimentConfig
from runtime.launch import LaunchError, LaunchInfo, detect_launch
from runtime.rank import Rank
from runtime.schema import InputError
from runtime.topology import Topology, stage_layers

if TYPE_CHECKING:
    from transformers import PretrainedConfig

log = logging.getLogger("runtime")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m runtime", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="exp_config.json written by the control node")
    parser.add_argument("--dry-run", action="store_true", help="print the detected launch and topology, then exit")
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)  # the deepspeed launcher's
    parser.add_argument("--rendezvous-timeout", type=float, default=60.0, help="seconds to reach rank 0")
    parser.add_argument("--comm-timeout", type=float, default=600.0, help="seconds any collective may wait")
    bench = parser.add_argument_group("benchmark mode (random weights of a real model's shape, no checkpoint)")
    bench.add_argument("--init", choices=["checkpoint", "random"], default="checkpoint")
    bench.add_argument("--shape", help="named shape for --init random, e.g. llama-3.1-8b")
    bench.add_argument("--prompt-tokens", type=int, default=128, help="synthetic prompt length (random mode)")
    bench.add_argument("--prompts", type=int, default=0, help="synthetic prompts (random mode; default: one batch)")
    parser.add_argument(
        "--skip-calibration",
        action="store_true",
        help="do not time the links before decoding (nor, on a single rank, the memory bandwidth after)",
    )
    return parser


def model_config_of(args: argparse.Namespace, cfg: ExperimentConfig) -> PretrainedConfig:
    """The model's config (a named shape in random mode), checked against the run's parallel sizes."""
    from runtime.checkpoint import check_divisible, load_config
    from runtime.prequantized import is_prequantized
    from runtime.shapes import shape_config

    model = shape_config(args.shape) if args.init == "random" else load_config(cfg.model_path)
    check_divisible(model, cfg.tp_size, cfg.pp_size)
    if cfg.precision in QUANTIZED and not is_prequantized(model):  # a TP size whose slices would cut a group:
        from runtime.quantize_stage import quant_group_size  # refused before anyone loads (pre-quantized: as stored)

        quant_group_size(model, cfg.precision, cfg.tp_size, cfg.quant_group_size)
    return model


def dry_run(info: LaunchInfo, cfg: ExperimentConfig, model: PretrainedConfig) -> int:
    """Print what this process would be, without joining anyone or loading any weights."""
    topo = Topology(cfg.tp_size, cfg.pp_size, cfg.dp_size, info.rank)
    layers = stage_layers(model.num_hidden_layers, cfg.pp_size, topo.pp_rank)
    print(info.describe())
    print(
        f"{topo.describe()}: tp group {topo.tp_group}, pipeline {topo.pp_group}, replicas {topo.dp_group}, "
        f"owns results: {topo.owns_results}"
    )
    print(f"stage {topo.pp_rank}: layers {layers.start}-{layers.stop - 1} of {model.num_hidden_layers}")
    return 0


def own_log(path: Path, line_format: str) -> None:
    """The rank's log lines also go to its own file (the job's output interleaves every rank of the node)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(line_format))
    logging.getLogger().addHandler(handler)


def load_run_config(args: argparse.Namespace) -> ExperimentConfig:
    if args.config is None:
        raise InputError("--config exp_config.json is required")
    if args.init == "random" and not args.shape:
        raise InputError("--init random needs --shape (e.g. llama-3.1-8b)")
    return ExperimentConfig.load(args.config)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    info = detect_launch()
    line_format = f"%(asctime)s [rank {info.rank}] %(levelname)s %(message)s"
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=line_format)
    try:
        cfg = load_run_config(args)
        if not args.dry_run:
            own_log(cfg.rank_log_path(info.rank), line_format)
        if cfg.world_size != info.world_size:
            raise LaunchError(
                f"{args.config}: world_size {cfg.world_size} (tp*pp*dp) but {info.launcher} started "
                f"{info.world_size} process(es)"
            )
        model = model_config_of(args, cfg)  # before joining: bad sizes fail on every rank at once, peers or not
    except InputError as err:
        log.error("%s", err)
        return 2
    if args.dry_run:
        return dry_run(info, cfg, model)
    rank = Rank(args, info, cfg, model)
    try:
        return rank.run()
    except InputError as err:
        return rank.fail(str(err), 2)
    except Exception as err:
        if rank.world is not None and _looks_like_peer_loss(err):
            # a peer vanished under a collective: give the watch a moment to name it before we speak
            time.sleep(rank.world.watch.stale_s + 2 * rank.world.watch.interval_s)
        log.exception("the rank failed")  # its traceback, in the job's output and the rank's own log
        return rank.fail(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}", 1)
    finally:
        rank.outputs.close()


def _looks_like_peer_loss(err: Exception) -> bool:
    import torch.distributed as dist

    text = str(err).lower()
    return isinstance(err, dist.DistError) or "connection" in text or "gloo" in text or "peer" in text


if __name__ == "__main__":
    sys.exit(main())
