"""``python -m services.ingest``: run the ingest service."""

import sys

from services.ingest.service import build
from services.ingest.settings import IngestSettings
from shared.runtime import main

sys.exit(main(IngestSettings(), build))
