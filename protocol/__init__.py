"""The market protocol: what a contributor, a validator and a home agree on; standard library only.

A leaf: nothing here imports pipelines, quality, rewards, ledger, engine, assets, simulation or tributary
(tests/protocol/test_protocol_facts.py checks), so every one of them can import it.

- `protocol.reasons`: every reason code a submission or request can be quarantined with (docs/PROTOCOL.md §5).
- `protocol.canonical`: canonical JSON, BLAKE2b-256 digests, key and signature widths, the weights `task` value.
- `protocol.files`: the one safe regular-file reader and the one atomic writer.
- `protocol.settings_rules`: the one rule table of the market's settings (type, range, whether governed).
"""
