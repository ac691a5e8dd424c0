"""io layer: config schemas and loading, topology catalog, results tables, plots."""
