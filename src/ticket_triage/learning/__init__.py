"""Learning from agents: retrain on their corrections (retrain.py) and gate the result against
the model in service (compare.py, verdict.py) before it is registered and promoted."""
