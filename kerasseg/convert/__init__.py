"""Weight converters from other ecosystems (numpy state dicts; torch only for legacy files).

The converters live in the submodules (`kerasseg.convert.torchvision`).
"""

__all__ = []
