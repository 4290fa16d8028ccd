"""Evaluation: k-NN, probes, shape metrics, retrieval. Public: `knn_predict` (see DESIGN.md).

Names resolve lazily (PEP 562) so importing the package does not import every metric family.
"""

from importlib import import_module

_EXPORTS = {
    "knn_predict": "knn",
    "classification_report": "knn",
    "retrieval_topk": "retrieval",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
