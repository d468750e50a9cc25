"""RegenSpine: runs a spine clinic treating pain with autologous bone-marrow cells.

It also proves what the clinic did: who was treated, with which cells, and how they fared.
"""

__version__ = "0.1.0"
