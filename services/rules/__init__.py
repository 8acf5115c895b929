"""Rules: keeps each subject's state and decides who must be contacted about what, and when.

Domain (no Kafka, MongoDB or HTTP): :mod:`.sdk` (the contract a rule implements),
:mod:`.calendar` (local time), :mod:`.state` (subject state from events), :mod:`.builtin`
(the maintenance rules), :mod:`.registry` (which rules run), :mod:`.testing` (run a rule against
events at chosen times).
"""
