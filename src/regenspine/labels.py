"""Barcodes for identifiers printed on wristbands and labels (Code 128 as SVG)."""

from __future__ import annotations

import base64
import io

import barcode
from barcode.writer import SVGWriter


def code128_svg(value: str) -> str:
    """An SVG document of the value as Code 128 with the human-readable text under it."""
    symbol = barcode.get("code128", value, writer=SVGWriter())
    buffer = io.BytesIO()
    symbol.write(
        buffer,
        options={
            "module_width": 0.3,
            "module_height": 12,
            "font_size": 8,
            "text_distance": 4,
            "quiet_zone": 3,
        },
    )
    return buffer.getvalue().decode("utf-8")


def code128_data_uri(value: str) -> str:
    # An <img> data URI keeps the SVG's own style attributes out of the page's CSP scope.
    encoded = base64.b64encode(code128_svg(value).encode("utf-8")).decode("ascii")
    return f"data:image/svg+xml;base64,{encoded}"
