"""The node runtime: a DeepSpeed entry script run by srun or the deepspeed launcher on compute nodes.

This package's top level imports nothing heavy: the cockpit imports `runtime.contract` without torch.
"""
