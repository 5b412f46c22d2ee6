"""The bottom layer: errors, the home layout, CIDs, JSON I/O, inputs, limits, reporters; it imports no other layer."""
