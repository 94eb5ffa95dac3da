"""The parallelism strategies of a sweep: each turns the sweep's settings into one pure `ExperimentConfig` and
the `JobSpec` the job factory renders (what it needs from the scheduler), and says what it does to the model.

    reference        one device, the whole model: the tokens every other strategy must reproduce
    tp_nodes         tensor parallel across nodes, one GPU each: every layer split, all-reduces over the network
    pp_nodes         pipeline parallel across nodes: layers split into stages, activations sent stage to stage
    tp_node          tensor parallel inside one node: all-reduces over the node's own links
    hybrid           TP inside each node x PP across nodes: all-reduces stay local, only activations cross
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, NamedTuple

from cockpit.jobs.factory import JobSpec
from runtime.contract import Device, ExperimentConfig, Precision, Profiler

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class SweepSettings:
    """What every strategy of one sweep shares: model, cluster shape, decoding, paths, Slurm bookkeeping."""

    model_name: str
    model_path: str
    model_tag: str  # short, for strategy ids: "llama8b", "tiny"
    run_id: str
    run_dir: Path  # <runs>/run_<ts>: one folder per strategy below it
    prompt_df_path: Path
    nodes: int = 2
    gpus_per_node: int = 1
    batch_size: int = 4
    max_new_tokens: int = 128
    precision: Precision = "bf16"
    quant_group_size: int | None = None
    device: Device = "auto"
    fast_decode: bool = True
    slurm_time_limit: str = "01:00:00"
    partition: str | None = None
    account: str | None = None
    profiling_enabled: bool = False
    profilers: tuple[Profiler, ...] = ("torch",)
    profile_steps: int = 8
    warmup_batches: int = 1
    repeats: int = 1


class Shape(NamedTuple):
    tp: int
    pp: int
    nodes: int


@dataclass(frozen=True)
class ParallelismStrategy(ABC):
    """One way to spread the model over the cluster."""

    settings: SweepSettings
    kind: ClassVar[str]

    @abstractmethod
    def shape(self) -> Shape:
        """TP size, PP size and nodes, from the sweep's cluster shape."""

    @abstractmethod
    def describe_topology(self) -> str:
        """In words, for people: where the model is cut and what crosses which link."""

    @classmethod
    @abstractmethod
    def label(cls, shape: Shape) -> str:
        """The strategy at `shape` in a few words: 'TP-2 across 2 nodes'."""

    @property
    def tp_size(self) -> int:
        return self.shape().tp

    @property
    def pp_size(self) -> int:
        return self.shape().pp

    @property
    def num_nodes(self) -> int:
        return self.shape().nodes

    @property
    def world_size(self) -> int:
        return self.tp_size * self.pp_size

    @property
    def gpus_per_node(self) -> int:
        return self.world_size // self.num_nodes

    @property
    def strategy_id(self) -> str:
        return f"{self.settings.model_tag}_pp{self.pp_size}_tp{self.tp_size}_n{self.num_nodes}"

    @property
    def output_root(self) -> Path:
        return self.settings.run_dir / self.strategy_id

    def config(self) -> ExperimentConfig:
        """The pure data the job factory renders and the runtime reads."""
        s = self.settings
        return ExperimentConfig(
            strategy_id=self.strategy_id,
            run_id=s.run_id,
            model_name=s.model_name,
            model_path=s.model_path,
            prompt_df_path=str(s.prompt_df_path),
            output_root=str(self.output_root),
            num_nodes=self.num_nodes,
            gpus_per_node=self.gpus_per_node,
            tp_size=self.tp_size,
            pp_size=self.pp_size,
            batch_size=s.batch_size,
            max_new_tokens=s.max_new_tokens,
            precision=s.precision,
            quant_group_size=s.quant_group_size,
            device=s.device,
            fast_decode=s.fast_decode,
            slurm_time_limit=s.slurm_time_limit,
            partition=s.partition,
            account=s.account,
            profiling_enabled=s.profiling_enabled,
            profilers=tuple(s.profilers),  # a list when read back from the manifest
            profile_steps=s.profile_steps,
            warmup_batches=s.warmup_batches,
            repeats=s.repeats,
        )

    def job_spec(self) -> JobSpec:
        """The strategy's job as the factory renders it."""
        return JobSpec(self.config(), self.slurm_constraints(), f"{self.strategy_id}: {self.describe_topology()}")

    def slurm_constraints(self) -> dict[str, str | int]:
        """The #SBATCH options: one task per GPU, packed so consecutive ranks share a node."""
        s = self.settings
        options: dict[str, str | int] = {
            "job-name": self.strategy_id,
            "nodes": self.num_nodes,
            "ntasks-per-node": self.gpus_per_node,
            "time": s.slurm_time_limit,
        }
        if s.device != "cpu":
            options["gres"] = f"gpu:{self.gpus_per_node}"
        if s.partition:
            options["partition"] = s.partition
        if s.account:
            options["account"] = s.account
        return options

    def expected_jobs(self) -> int:
        """Scheduler jobs per attempt: one job decodes both prompt variants from the one prompt table."""
        return 1

    def result_ranks(self) -> list[int]:
        """The ranks that write shards: the last stage's first TP slice (see runtime.topology)."""
        return [(self.pp_size - 1) * self.tp_size]

    def postprocess(self, frame: pd.DataFrame) -> pd.DataFrame:
        """This strategy's collected rows, tagged with its shape and in prompt order."""
        tagged = frame.assign(
            strategy=self.strategy_id, strategy_kind=self.kind, tp_size=self.tp_size, pp_size=self.pp_size
        )
        return tagged.sort_values(["variant", "prompt_id"], kind="stable").reset_index(drop=True)

    def with_settings(self, **changes: object) -> ParallelismStrategy:
        """The same strategy with other settings (a retry with a smaller batch, a parameter sweep)."""
        return dataclasses.replace(self, settings=dataclasses.replace(self.settings, **changes))


class SingleDeviceReference(ParallelismStrategy):
    kind = "reference"

    @classmethod
    def label(cls, shape: Shape) -> str:
        return "one device"

    def shape(self) -> Shape:
        return Shape(tp=1, pp=1, nodes=1)

    def describe_topology(self) -> str:
        return "one device holds the whole model: no communication; the tokens every strategy must reproduce"


class TensorParallelAcrossNodes(ParallelismStrategy):
    kind = "tp_nodes"

    @classmethod
    def label(cls, shape: Shape) -> str:
        return f"TP-{shape.tp} across {shape.nodes} nodes"

    def shape(self) -> Shape:
        return Shape(tp=self.settings.nodes, pp=1, nodes=self.settings.nodes)

    def describe_topology(self) -> str:
        n = self.tp_size
        return (
            f"TP={n} across {n} nodes, one GPU each: layers split {n} ways, 2 all-reduces per layer cross the network"
        )


class PipelineParallelAcrossNodes(ParallelismStrategy):
    kind = "pp_nodes"

    @classmethod
    def label(cls, shape: Shape) -> str:
        return f"PP-{shape.pp} across {shape.nodes} nodes"

    def shape(self) -> Shape:
        return Shape(tp=1, pp=self.settings.nodes, nodes=self.settings.nodes)

    def describe_topology(self) -> str:
        n = self.pp_size
        return f"PP={n} across {n} nodes: stages of whole layers, one activation message per token per stage boundary"


class TensorParallelInNode(ParallelismStrategy):
    kind = "tp_node"

    @classmethod
    def label(cls, shape: Shape) -> str:
        return f"TP-{shape.tp} in one node"

    def shape(self) -> Shape:
        return Shape(tp=self.settings.gpus_per_node, pp=1, nodes=1)

    def describe_topology(self) -> str:
        n = self.tp_size
        return f"TP={n} inside one node: layers split {n} ways, all-reduces over the node's own links"


class HybridTensorPipeline(ParallelismStrategy):
    kind = "hybrid"

    @classmethod
    def label(cls, shape: Shape) -> str:
        return f"TP-{shape.tp} in each node x PP-{shape.pp} across {shape.nodes} nodes"

    def shape(self) -> Shape:
        return Shape(tp=self.settings.gpus_per_node, pp=self.settings.nodes, nodes=self.settings.nodes)

    def describe_topology(self) -> str:
        return (
            f"TP={self.tp_size} inside each node x PP={self.pp_size} across nodes: all-reduces stay in the node, "
            "only activations cross the network"
        )


STRATEGIES: dict[str, type[ParallelismStrategy]] = {
    cls.kind: cls
    for cls in (
        SingleDeviceReference,
        TensorParallelAcrossNodes,
        PipelineParallelAcrossNodes,
        TensorParallelInNode,
        HybridTensorPipeline,
    )
}


def strategy_kinds(nodes: int, gpus_per_node: int) -> list[str]:
    """The reference first (every other strategy is judged against it), then those the cluster's
    shape allows: across nodes with 2+ nodes, inside a node with 2+ GPUs per node."""
    wanted = ["reference"]
    if nodes >= 2:
        wanted += ["tp_nodes", "pp_nodes"]
    if gpus_per_node >= 2:
        wanted += ["tp_node"]
    if nodes >= 2 and gpus_per_node >= 2:
        wanted += ["hybrid"]
    return wanted


def sweep_strategies(settings: SweepSettings) -> list[ParallelismStrategy]:
    """The strategies of `strategy_kinds` for the sweep's shape."""
    return [STRATEGIES[kind](settings) for kind in strategy_kinds(settings.nodes, settings.gpus_per_node)]
