"""MLPerf Inference image-classification harness: dataset, preprocessing, backends, LoadGen SUTs, results."""
from __future__ import annotations

__version__ = "1.0.0"
