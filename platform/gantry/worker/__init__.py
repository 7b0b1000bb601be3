"""The worker agent: one per node, the only holder of the node's Docker socket."""
