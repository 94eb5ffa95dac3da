"""Runtime delivery: build the node runtime once, deploy it to every node, verify it before each sweep."""
