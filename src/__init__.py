"""ECAPA-TDNN speaker verification on MindSpore."""
