"""minprot-ds: distil ProtBert into a smaller student on DeepSpeed."""
__version__ = "0.1.0"
