"""Model zoo: ``create_model("mobilenet_v3_small", num_classes=10, in_channels=1)``."""

from udacisense.models import mobilenet, resnet, timm_zoo  # noqa: F401  (registers the built-in models)
from udacisense.models.registry import MODEL_SOURCES, MODELS, STUDENT_WIDTHS, STUDENTS, check_fits, create_model, register_model

__all__ = ["MODEL_SOURCES", "MODELS", "STUDENTS", "STUDENT_WIDTHS", "check_fits", "create_model", "register_model"]
