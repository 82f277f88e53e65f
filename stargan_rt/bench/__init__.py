"""`stargan-rt bench`: engines, PyTorch and the platforms' own quantizers timed side by side in one
process, with the machine's ceilings, accuracy against PyTorch fp32 and the machine described.

Not part of the runtime path: it imports torch (lazily) for the reference rows.
"""
