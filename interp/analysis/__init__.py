"""Analyses on cached tensors, and on edited forward passes where they must.

Refusal directions (``directions``, ``transfer``, ``refusal``), cross-lingual similarity
(``similarity`` + its plain reference), geometry, token embeddings, language neurons, factual
recall and consistency (``factual``, ``factual_data``, ``factual_lens``, ``consistency``),
the final-layer shortcut, cross-lingual patching, the controls of lens readouts, the language
of a generated answer (``language_id``), how often a model refuses (``refusal_behaviour``),
output-language steering (``steering``; its settings and batched sweep, ``steering_sweep``) and
language confusion (``confusion``).

They stand on extraction, interventions and the lenses; nothing in the library imports them
but ``interp.testbeds`` and ``interp.bench``.
"""
