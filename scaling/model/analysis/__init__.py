"""Analysis of runs: metric definitions and the run result, step explanation, Shapley attribution."""
