"""Published networks built only from public pysnn modules."""

from pysnn.models.diehl_cook import DiehlCook2015

__all__ = ["DiehlCook2015"]
