"""``python -m services.ingest``: run the ingest service; ``python -m services.ingest mapping
…`` to develop a mapping (:mod:`services.ingest.cli`)."""

import sys

if sys.argv[1:2] == ["mapping"]:
    from services.ingest.cli import main as mapping_main

    sys.exit(mapping_main(sys.argv[2:]))

from services.ingest.service import build
from services.ingest.settings import IngestSettings
from shared.runtime import main

sys.exit(main(IngestSettings(), build))
