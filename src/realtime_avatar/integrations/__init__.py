"""Faces for other voice-agent frameworks (``pipecat``): install the matching extra."""
