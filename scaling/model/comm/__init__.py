"""Communication: collective operations and groups, algorithms as phases of flows, the cluster
network graph, closed-form and flow-level cost models, and the communicator ranks call."""
