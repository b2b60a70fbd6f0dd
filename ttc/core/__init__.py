"""The core layer: vocabulary, interfaces, budget and ledger, search context, config base, registry.

It imports nothing from above it (plugins or application)."""
