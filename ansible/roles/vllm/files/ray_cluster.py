"""Print the Ray cluster at ADDRESS as JSON: its nodes, and on which nodes each placement group holds GPUs."""

import json
import sys

import ray

ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
nodes = {node["NodeID"]: node for node in ray.nodes()}
print(
    json.dumps(
        {
            "nodes": [
                {"address": node["NodeManagerAddress"], "alive": node["Alive"], "gpus": node["Resources"].get("GPU", 0)}
                for node in nodes.values()
            ],
            "placement_groups": [
                {
                    "state": group["state"],
                    "gpu_addresses": sorted(
                        {
                            nodes[node_id]["NodeManagerAddress"]
                            for index, node_id in group["bundles_to_node_id"].items()
                            if group["bundles"][index].get("GPU") and node_id in nodes
                        }
                    ),
                }
                for group in ray.util.placement_group_table().values()
            ],
        }
    )
)
