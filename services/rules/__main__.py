"""``python -m services.rules``: run the rules service."""

import sys

from services.rules.service import build
from services.rules.settings import RulesSettings
from shared.runtime import main

sys.exit(main(RulesSettings(), build))
