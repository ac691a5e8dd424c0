"""Communication: collective operations and groups, algorithms (``algos``: one module each,
registered by name), the cluster network graph, the tuner on flows and its uncontended mode, and
the communicator ranks call."""
