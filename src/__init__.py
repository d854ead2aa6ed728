"""ECAPA-TDNN speaker verification on MindSpore (see README.md for the layout)."""
