"""Keras configurations made from a class's own attributes."""

__all__ = ["ConfigFromAttributes"]


class ConfigFromAttributes:
    """Mixin: `get_config` adds the attributes named in `config_keys`.

    Each class keeps its constructor's arguments (checked) as attributes of the same names
    and lists those names in `config_keys`, so that ``type(obj)(**obj.get_config())``
    rebuilds it and a saved `.keras` model loads. Used by the classical layers, the losses
    and the metrics.
    """

    config_keys = ()

    def get_config(self):
        config = super().get_config()
        config.update({key: getattr(self, key) for key in self.config_keys})
        return config
