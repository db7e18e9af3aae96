"""edgepack: take a trained model to a phone or edge board, prove it computes what the host
computes, and measure how fast."""

__version__ = "0.1.0"
