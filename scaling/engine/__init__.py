"""Engine layer: SimPy helpers and the flow-level network. No ML concepts live here."""
