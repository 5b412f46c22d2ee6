"""Running programs, recording experiments from their results, dashboards of them, and MLPerf submission trees."""
