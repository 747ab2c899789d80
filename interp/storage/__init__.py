"""What reaches the disk, and how it is checked when it comes back.

Atomic writes and checksums (``files``), the cache directory (``paths``), provenance records
(``provenance``), the activation store (``store``) and what it returns (``activations``).

Storage knows nothing of models or extraction; everything above it writes through it.
"""
