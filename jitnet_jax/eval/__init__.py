"""How a run is judged: baselines, cost model, FLOPs."""
