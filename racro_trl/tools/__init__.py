"""The ``racro`` command line, ``make demo``, and checkpoint export."""
