"""A minimal Gatan DigitalMicrograph (.dm3 / .dm4) writer for tests: one 2-D image with calibrations and the
image tags a test chooses (rosettasciio reads these files but has no writer).

Layout (as ``rsciio.digitalmicrograph`` reads it): a big-endian header (version, size, little-endian flag),
then a tree of tag groups (id 20) and data tags (id 21: ``%%%%``, an info array of type codes, the value in
little-endian byte order). DM4 widens the counts to 64 bits and adds a size before each tag's contents.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

_SIMPLE = {np.dtype("int16"): 2, np.dtype("int32"): 3, np.dtype("uint16"): 4, np.dtype("uint32"): 5,
           np.dtype("float32"): 6, np.dtype("float64"): 7, np.dtype("uint8"): 10}
_IMAGE_TYPE = {np.dtype("int16"): 1, np.dtype("float32"): 2, np.dtype("uint8"): 6, np.dtype("int32"): 7,
               np.dtype("int8"): 9, np.dtype("uint16"): 10, np.dtype("uint32"): 11, np.dtype("float64"): 12,
               np.dtype("complex64"): 3, np.dtype("bool"): 14}


class _Writer:
    def __init__(self, version: int):
        self.v = version

    def count(self, n: int) -> bytes:  # the reader's read_l_or_q: big-endian
        return struct.pack(">q" if self.v == 4 else ">l", n)

    def data_tag(self, name: str, value) -> bytes:
        head = bytes([21]) + struct.pack(">h", len(name)) + name.encode("latin-1")
        if isinstance(value, str):  # an array of uint16 characters
            arr = np.frombuffer(value.encode("utf-16-le"), "<u2")
            body = self.count(3) + self.count(20) + self.count(4) + self.count(len(arr)) + arr.tobytes()
        elif isinstance(value, np.ndarray):  # the image data
            body = (self.count(3) + self.count(20) + self.count(_SIMPLE.get(value.dtype, 10))
                    + self.count(value.size if value.dtype in _SIMPLE else value.nbytes)
                    + np.ascontiguousarray(value).astype(value.dtype.newbyteorder("<")).tobytes())
        elif isinstance(value, float):
            body = self.count(1) + self.count(7) + struct.pack("<d", value)
        else:
            body = self.count(1) + self.count(3) + struct.pack("<l", int(value))
        body = b"%%%%" + body
        return head + (struct.pack(">q", len(body)) if self.v == 4 else b"") + body

    def group(self, name: str, items: dict) -> bytes:
        inner = b"".join(self.entry(k, v) for k, v in items.items())
        head = bytes([20]) + struct.pack(">h", len(name)) + name.encode("latin-1")
        size = struct.pack(">q", len(inner)) if self.v == 4 else b""
        return head + bytes([0, 1]) + size + self.count(len(items)) + inner

    def entry(self, name: str, value) -> bytes:
        if isinstance(value, dict):
            return self.group("" if name.startswith("_") else name, value)
        return self.data_tag(name, value)


def write_dm(path, image: np.ndarray, pixel_size_nm: float = 0.01, image_tags: dict | None = None,
             name: str = "HAADF image", version: int | None = None) -> Path:
    """Write ``image`` (2-D) to a .dm3 or .dm4 file (version from the suffix) with both axes calibrated in nm
    and ``image_tags`` (nested dict of str, int, float) under ``ImageTags``."""
    path = Path(path)
    version = version or (4 if path.suffix.lower() == ".dm4" else 3)
    w = _Writer(version)
    image = np.asarray(image)
    h, wd = image.shape[-2], image.shape[-1]
    dims = {f"_d{i}": {"Origin": 0.0, "Scale": float(pixel_size_nm), "Units": "nm"} for i in range(image.ndim)}
    imdict = {
        "ImageData": {
            "Calibrations": {"Brightness": {"Origin": 0.0, "Scale": 1.0, "Units": "counts"}, "Dimension": dims},
            "Data": image,
            "DataType": _IMAGE_TYPE[image.dtype],
            "Dimensions": {f"Data{i}": int(s) for i, s in enumerate(image.shape[::-1])},
            "PixelDepth": int(image.dtype.itemsize),
        },
        "ImageTags": image_tags or {},
        "Name": name,
    }
    root = {"ImageList": {"_0": imdict}}
    body = b"".join(w.entry(k, v) for k, v in root.items())
    tree = bytes([0, 1]) + w.count(len(root)) + body
    header = struct.pack(">l", version) + w.count(len(tree) + 8) + struct.pack(">l", 1)
    path.write_bytes(header + tree + b"\0" * 8)
    del h, wd
    return path
