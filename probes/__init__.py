"""Linear probes on cached activations (knowledge boundaries, cross-lingual transfer)."""
