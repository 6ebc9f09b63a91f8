"""Application helpers at the original import path."""
