"""UdaciSense: shrink PyTorch image classifiers into validated mobile artifacts."""

from udacisense.errors import UdaciSenseError

__version__ = "0.1.0"
__all__ = ["UdaciSenseError", "__version__"]
