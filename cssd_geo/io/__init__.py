"""Readers and writers: scenes, vector labels, class maps. Nothing here knows torch."""
