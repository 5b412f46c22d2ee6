"""Moving bytes in: downloads with resume and checksums, and the safe unpacking of archives."""
