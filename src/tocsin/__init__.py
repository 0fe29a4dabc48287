"""tocsin: public emergency alerts, CAP 1.2 in, every device in the area out."""

__version__ = "0.1.0"
