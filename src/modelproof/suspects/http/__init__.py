"""The HTTP suspect: an Open Inference Protocol (V2) client, its codecs and its transport."""
