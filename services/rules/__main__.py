"""``python -m services.rules``: run the rules service;
``python -m services.rules replay --from <offset|time> --dry-run``: see :mod:`.replay`;
``python -m services.rules journeys validate|apply|list|dry-run``: see :mod:`.journeys.cli`."""

import sys

if len(sys.argv) > 1 and sys.argv[1] == "replay":
    from services.rules.replay import main as replay_main

    sys.exit(replay_main(sys.argv[2:]))
if len(sys.argv) > 1 and sys.argv[1] == "journeys":
    from services.rules.journeys.cli import main as journeys_main

    sys.exit(journeys_main(sys.argv[2:]))

from services.rules.service import build
from services.rules.settings import RulesSettings
from shared.runtime import main

sys.exit(main(RulesSettings(), build))
