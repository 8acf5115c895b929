"""``python -m services.analytics``: run the analytics service."""

import sys

from services.analytics.service import build
from services.analytics.settings import AnalyticsSettings
from shared.runtime import main

sys.exit(main(AnalyticsSettings(), build))
