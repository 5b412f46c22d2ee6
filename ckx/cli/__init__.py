"""The command line: CK's grammar in, human text or JSON out, and the one place that prints errors."""
