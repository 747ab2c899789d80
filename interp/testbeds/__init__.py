"""Models built from the embedded ones as positive controls for the analyses.

``refusal``: Gemma 3 270M (base) taught to refuse harmful requests in English
(``gemma-3-270m-refusal-en``), the model on which the refusal analysis can be checked.
"""
