"""The cluster's nodes: the inventory, ssh fan-out, telemetry, Wake-on-LAN and power."""
