"""Notifier: delivers each action exactly once per occurrence — e-mail, chat bots, signed
webhooks, tasks — respecting preferences, unsubscribes, caps and quiet hours.

Domain (no Kafka, MongoDB or HTTP): :mod:`.entry` (an entry's states), :mod:`.policy` (send,
suppress or defer), :mod:`.limits` (attempts and backoff), :mod:`.digest`, :mod:`.templates`,
:mod:`.unsubscribe`, :mod:`.outcomes`. Channels: :mod:`.channels` (one adapter per kind behind
:class:`~.channels.base.Channel`). Stores: :mod:`.ledger`, :mod:`.directory`, :mod:`.tasks`.
Orchestration: :mod:`.intake` (actions in), :mod:`.dispatcher` (due entries out). Wiring:
:mod:`.service`; HTTP: :mod:`.api`.
"""
