"""Reference populations: independent models, the calibration of a key's null on them, and the finished key."""
