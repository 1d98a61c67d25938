import os
os.environ.setdefault("HIPERF_PROGRESS", "0")
os.environ.setdefault("MPLBACKEND", "Agg")
