"""Weight converters from other ecosystems (numpy state dicts; no torch needed).

The converters live in the submodules (`kerasseg.convert.torchvision`).
"""

__all__ = []
