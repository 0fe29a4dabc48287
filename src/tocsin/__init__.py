"""tocsin: public emergency alerts, CAP 1.2 in, every device in the area out."""

from tocsin import aio

__version__ = "0.1.0"

aio.install()  # a cancellation is never lost on Python 3.11 (aio.py)
