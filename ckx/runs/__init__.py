"""Running programs, recording experiments from their results, and dashboards of them."""
