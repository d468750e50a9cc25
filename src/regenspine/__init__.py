"""RegenSpine: runs a spine clinic treating pain with autologous bone-marrow cells, and proves what it did."""

__version__ = "0.1.0"
