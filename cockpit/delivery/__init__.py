"""Delivery to the nodes: the runtime built once, deployed to every node and verified before each sweep; the model
pushed to the same path on every node and checked before each sweep."""
