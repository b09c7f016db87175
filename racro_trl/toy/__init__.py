"""The colour task and the tiny models built here (no hub): what the CPU tests and ``make demo`` train."""
