"""``python -m harness``: run one MLPerf image-classification test under LoadGen."""
from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
