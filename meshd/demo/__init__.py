"""`meshd demo`: a live simulated network of camps, end to end, on one machine (issue 8)."""
