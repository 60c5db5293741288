"""Pipeline stages, one file each, registered by name (see :mod:`udacisense.stages.registry`).

Importing this package registers the built-in stages; a new technique is one more module that
calls :func:`register_stage` (a recipe or a test can import it from anywhere).
"""

from udacisense.stages import distill, factorize, prune_channels, prune_unstructured, quantize
from udacisense.stages.registry import (
    STAGES,
    SearchDraw,
    Stage,
    StageContext,
    StageOutput,
    StageParams,
    register_stage,
)

__all__ = [
    "STAGES", "SearchDraw", "Stage", "StageContext", "StageOutput", "StageParams", "register_stage",
    "distill", "factorize", "prune_channels", "prune_unstructured", "quantize",
]
