"""``python -m services.notifier``: run the notifier service."""

import sys

from services.notifier.service import build
from services.notifier.settings import NotifierSettings
from shared.runtime import main

sys.exit(main(NotifierSettings(), build))
