"""Client helpers at the original import path."""
