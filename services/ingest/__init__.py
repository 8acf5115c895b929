"""Ingest: raw customer, contract and channel events in; canonical CloudEvents out.

Domain modules (no Kafka, MongoDB or HTTP): :mod:`.reasons`, :mod:`.decode`, :mod:`.normalise`.
Adapters: :mod:`.dedup` (MongoDB), :mod:`.api` (HTTP). Entry point and wiring: :mod:`.service`.
"""
