"""How the notifier reaches people outside e-mail: signed webhooks (Standard Webhooks) and chat
bots' incoming webhooks (DingTalk, WeCom, Feishu/Lark, Slack).

Each sender makes one delivery attempt per call and reports failure by raising
:class:`~services.notifier.errors.TransientDeliveryError` or
:class:`~services.notifier.errors.PermanentDeliveryError`; retrying is the dispatcher's business.
Every destination passes :func:`~services.notifier.channels.guard.check_destination` first.
"""
