"""The registry gate: audit every new model version and alias move, record the verdict on the
version, keep a signed ledger of alias moves, and let a deployment check the version it serves.
"""
