"""The ledger: an append-only, hash-chained record of every attempt."""

__all__: list[str] = []
