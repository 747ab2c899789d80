"""Loading and addressing a model.

``models`` (embedded names, local dirs, GGUF, hub ids, dtype, device_map), ``convert`` (the
embedded models' one-time GGUF conversion), ``architectures`` (one declarative row per family),
``sites`` and ``hooks`` (named places to read and edit), ``positions``, ``placement``,
``batching``, ``transfer``, ``dtypes`` and ``backends`` (hooks, transformer_lens, nnsight).

It stands on ``interp.storage`` and knows nothing of extraction, edits or analyses.
"""
